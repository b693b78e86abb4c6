"""Up to three weights sharing an input in ONE tiled GEMM (shaders/matmul_tiled_multi.wgsl;
py_engine/ops/linear.linear_multi past the mat-vec's rows), on the native backend (lavapipe here):
each output against float64 numpy and bit for bit against its own separate product, with ragged
edges in M, each N_g and K, both tile sizes, tiles straddling two weights, K slices run side by
side (split-K) and lavapipe's K windows; a 16-bit format through its f32 copies; and a whole
Mamba-1, Mamba-2 and Mamba-3 prefill with it on and off. Skips, saying why, only without any
Vulkan/Metal/D3D12 adapter."""
import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

gpu = runner("import py_engine.ops.linear as L\nimport py_engine.ops.weight_format as WF")

CODE = """
dev.force_tiled_matmul = True
dev.force_split_k = args_split
L.BIG_TILE_MIN_SIDE = args_min_side
names = [k for k in ('w0', 'w1', 'w2') if k in T]
ws = [T[k] for k in names]
if args_fmt != 'f32':
    ws = [WF.quantize(b, w, args_fmt) for w in ws]
dev.tiled_multi = True
calls, orig = [], L._tiled_multi
L._tiled_multi = lambda *a, **k: (calls.append(len(a[2])), orig(*a, **k))[1]
n0 = b.dispatch_count
ys = L.linear_multi(b, T['x'], ws)
info['multi_dispatches'] = b.dispatch_count - n0
info['multi_calls'] = list(calls)
L._tiled_multi = orig
info['built'] = sorted({k[0] + ':' + k[1] for k in dev._pipelines if k[0].startswith('matmul_tiled')})
dev.tiled_multi = False
n0 = b.dispatch_count
sep = L.linear_multi(b, T['x'], ws)
info['separate_dispatches'] = b.dispatch_count - n0
for k, y, s in zip(names, ys, sep):
    outs['y' + k[1]] = y
    outs['s' + k[1]] = s
dev.tiled_multi = None
dev.force_tiled_matmul = None
dev.force_split_k = False
L.BIG_TILE_MIN_SIDE = 65
"""


def run_multi(engine, M, K, Ns, big_tiles, split=False, fmt="f32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    ws = {f"w{g}": rng.standard_normal((n, K)).astype(np.float32) for g, n in enumerate(Ns)}
    code = CODE.replace("args_split", repr(split)).replace("args_fmt", repr(fmt)) \
        .replace("args_min_side", "1" if big_tiles else "10 ** 9")
    outs, info = gpu(engine, code, x=x, **ws)
    return x, ws, outs, info


@pytest.mark.parametrize("M,K,Ns", [(5, 3, (7, 2)), (65, 130, (129, 64)), (200, 96, (70, 16, 16)),
                                    (70, 1030, (20, 9, 7)), (130, 600, (64, 64, 12)),
                                    (33, 4100, (20, 9, 7))])
@pytest.mark.parametrize("big_tiles", [False, True])
def test_each_output_is_its_own_product(engine, M, K, Ns, big_tiles):
    """Every Y_g equals x @ W_g^T (float64) and, with the same K walk (no split on lavapipe),
    the separate product bit for bit -- also where one tile holds columns of two weights, and
    past lavapipe's loop-pass cap (K 4100: windows of K, each accumulating into every Y_g,
    W_1 and W_2 walked along with W_0) -- in one dispatch per window where the separate
    products take one each."""
    x, ws, outs, info = run_multi(engine, M, K, Ns, big_tiles)
    for g in range(len(Ns)):
        ref = d64(x) @ d64(ws[f"w{g}"]).T
        assert rel_err(outs[f"y{g}"], ref) <= 1e-4, g
        assert np.array_equal(outs[f"y{g}"], outs[f"s{g}"]), g
    assert info["multi_calls"] == [len(Ns)]
    assert info["separate_dispatches"] == len(Ns) * info["multi_dispatches"]
    if K > 4032:
        assert info["multi_dispatches"] > 1              # K windows
    entry = "matmul_tiled_128" if big_tiles else "matmul_tiled_64"
    assert f"matmul_tiled_multi:{entry}" in info["built"]


@pytest.mark.parametrize("M,K,Ns", [(70, 1030, (20, 9, 7)), (33, 4100, (128, 16, 16)),
                                    (130, 600, (140, 3))])
@pytest.mark.parametrize("big_tiles", [False, True])
def test_split_k_partials_reduce_into_each_output(engine, M, K, Ns, big_tiles):
    """Few tiles, deep K: slices side by side into the combined [S, M, N] partials, the multi
    reduce adding them into each Y_g -- one GEMM and one reduce for all the weights."""
    x, ws, outs, info = run_multi(engine, M, K, Ns, big_tiles, split=True, seed=1)
    for g in range(len(Ns)):
        assert rel_err(outs[f"y{g}"], d64(x) @ d64(ws[f"w{g}"]).T) <= 1e-4, g
    assert "matmul_tiled_multi:matmul_split_reduce" in info["built"]
    assert info["multi_calls"] == [len(Ns)] and info["multi_dispatches"] == 2


def test_narrow_weights_through_their_f32_copies(engine):
    """f16 weights: each dequantized (as matmul takes a narrow weight), then one GEMM -- the
    separate products' values bit for bit."""
    x, ws, outs, info = run_multi(engine, 40, 256, (48, 16, 16), True, fmt="f16", seed=2)
    for g in range(3):
        w16 = ws[f"w{g}"].astype(np.float16).astype(np.float64)
        assert rel_err(outs[f"y{g}"], d64(x) @ w16.T) <= 1e-4, g
        assert np.array_equal(outs[f"y{g}"], outs[f"s{g}"]), g
    assert info["multi_calls"] == [3]


FIX = REPO / "tests" / "fixtures"

MODEL = """
from py_engine.autograd.functional import Ctx
from py_engine.io.hf_loader import load_model_local
from py_engine.train.trainer import Trainer
import py_engine.ops.linear as L
dev = device
calls = []
orig = L._tiled_multi
L._tiled_multi = lambda *a, **k: (calls.append(len(a[2])), orig(*a, **k))[1]
dev.force_tiled_matmul = True
m = await load_model_local(dev, args['folder'])
ids = args['ids']
out = {}
for on in (True, False):
    dev.tiled_multi = on
    calls[:] = []
    t = m.ids_tensor(ids)
    b = dev.batch()
    logits = m.forward(Ctx(b), t, 1, None)
    b.submit()
    out[f'logits_{on}'] = await logits.to_bytes()
    out[f'multi_{on}'], calls[:] = list(calls), []
    logits.release(); t.release()
    tr = Trainer(m, lr=1e-2)
    grads, loss = await tr.gradients(ids, ids[1:] + ids[:1], 1, len(ids))
    out[f'grads_{on}'], out[f'loss_{on}'] = grads, loss
    out[f'train_multi_{on}'] = list(calls)
    tr.release()
L._tiled_multi = orig
dev.tiled_multi = None
dev.force_tiled_matmul = None
m.release()
result = out
"""


@pytest.mark.parametrize("name,multis", [
    ("models/mamba-d40-tied", [2, 3] * 2), ("models/falcon-d24-tied", [2, 3] * 2),
    ("models/mamba2-g1-tied", [3] * 2), ("models/mamba3-g2-r10-untied-onorm", [3, 3, 2] * 2),
    ("train/nemotronh-mamf-untied", [3, 3, 3])])
def test_model_prefill_and_gradients_unchanged(engine, name, multis):
    """A whole forward (Mamba-1's in_proj halves and x_proj, Mamba-2's in_proj, Mamba-3's eight
    in_proj blocks, attention's q|k|v, each in one GEMM) gives the logits bit for bit of the
    separate products, and training's gradients (each output's backward the separate
    linear's) too."""
    ids = [(i * 37 + 5) % 64 for i in range(24)]
    out = engine.run(MODEL, folder=str(FIX / name), ids=ids)
    assert out["multi_True"] == multis and out["multi_False"] == []   # weights per GEMM, by layer
    assert out["train_multi_True"] == multis and out["train_multi_False"] == []
    assert out["logits_True"] == out["logits_False"]
    assert out["loss_True"] == out["loss_False"]
    assert out["grads_True"].keys() == out["grads_False"].keys()
    for k in out["grads_True"]:
        assert out["grads_True"][k] == out["grads_False"][k], k
