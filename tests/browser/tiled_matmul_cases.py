"""The tiled GEMM's checks (shaders/matmul_tiled.wgsl, what real GPUs run for prefill and training),
shared by the native test (lavapipe, tests/unit/test_matmul_tiled_native.py) and the browser one
(SwiftShader, tests/browser/test_kernels_matmul_tiled.py). Both force the kernel, which software
adapters would not pick, for all four products of Linear -- x @ W^T + b, dY @ W, dY^T @ X and
out += x @ W^T, each reading a different operand contiguously -- against float64 numpy."""
import numpy as np

from tests.browser.kernel_harness import EPILOGUE, PRELUDE, d64, rel_err, tensor_args

TOL = 1e-4

CODE = """
import py_engine.ops.linear as L
dev.force_tiled_matmul = True
dev.force_split_k = args['split']
dev.tiled_kk = args['kk']
L.BIG_TILE_MIN_SIDE = args['min_side']
n0 = b.dispatch_count
outs['y'] = L.linear_forward(b, T['x'], T['w'], T['b'])
outs['dx'] = L.linear_backward_input(b, T['dy'], T['w'])
outs['dw'] = L.linear_backward_weight(b, T['dy'], T['x'])
L.linear_accumulate(b, T['x'], T['w'], T['acc'])
outs['acc'] = T['acc']
info['dispatches'] = b.dispatch_count - n0
info['tiles'] = sorted({k[1] for k in dev._pipelines if k[0] == 'matmul_tiled'})
info['kk_tiles'] = sorted({k[1] for k in dev._pipelines if k[0] == 'matmul_tiled_kk'})
dev.force_tiled_matmul = None
dev.tiled_kk = None
dev.force_split_k = False
L.BIG_TILE_MIN_SIDE = 65
"""


def check_products(engine, M, K, N, big_tiles, seed=0, split=False, kk=None):
    """All four products at (M, K, N); big_tiles: the 128x128 variant, else 64x64.
    split: K cut into slices run side by side, partials summed by matmul_split_reduce (what a
    real GPU does when C has few tiles), also on a software adapter. kk: True / False forces
    the 16-byte-staged kernel's choice (py_engine/ops/linear._kk_ok) on or off, None leaves
    the device's rule. Returns the run's info
    (dispatch count, entry points built so far)."""
    rng = np.random.default_rng(seed)
    x, w, bias = rng.standard_normal((M, K)), rng.standard_normal((N, K)), rng.standard_normal(N)
    dy, acc = rng.standard_normal((M, N)), rng.standard_normal((M, N))
    spec, data = tensor_args(dict(x=x, w=w, b=bias, dy=dy, acc=acc))
    res = engine.run(PRELUDE + CODE + EPILOGUE, spec=spec, data=data,
                     min_side=1 if big_tiles else 10 ** 9, split=split, kk=kk)
    got = {k: np.frombuffer(v, dtype=np.float32).astype(np.float64) for k, v in res["outs"].items()}
    x64, w64, dy64 = (d64(a.astype(np.float32)) for a in (x, w, dy))
    b64, acc64 = d64(bias.astype(np.float32)), d64(acc.astype(np.float32))
    assert rel_err(got["y"], x64 @ w64.T + b64) <= TOL
    assert rel_err(got["dx"], dy64 @ w64) <= TOL
    assert rel_err(got["dw"], dy64.T @ x64) <= TOL
    assert rel_err(got["acc"], acc64 + x64 @ w64.T) <= TOL
    assert ("matmul_tiled_128" if big_tiles else "matmul_tiled_64") in res["info"]["tiles"]
    if split:
        assert "matmul_split_reduce" in res["info"]["tiles"]
    return res["info"]
