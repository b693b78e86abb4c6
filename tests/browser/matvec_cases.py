"""The decode mat-vec with x staged in workgroup memory (STAGE in shaders/lib/matvec_rows.wgsl,
on by rule for narrow formats on tall matrices: py_engine/ops/weight_format.stage_x) against float64 numpy, shared by
tests/browser/test_kernels_weight_format.py (SwiftShader, the kernel forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.kernel_harness import runner
from tests.reference import weight_format_numpy as ref

gpu = runner("from py_engine.ops import weight_format as wf\nfrom py_engine.ops import linear as L\n"
             "from py_engine.ops.rmsnorm import NormedRows", decode=False)

CODE = """
dev.force_matvec = True
dev.matvec_stage = args['stage']
dev.matvec_rpt = args['rpt']
dev.matvec_tpr = args['tpr']
dev.matvec_prefetch = args['prefetch']
try:
    Q = [wf.quantize(b, T[n], args['fmt']) for n in ('w0', 'w1', 'w2')]
    outs['q0'], outs['q1'], outs['q2'] = (Q if Q[0].dtype != 'f32' else (None,) * 3)
    outs['n0'], outs['n1'], outs['n2'] = L.linear_multi(b, NormedRows(T['x'], T['nw'], 1e-5), Q)
    outs['m0'], outs['m1'], outs['m2'] = L.linear_multi(b, T['x'], Q)
finally:
    dev.force_matvec = False
    dev.matvec_stage = None
    dev.matvec_rpt = None
    dev.matvec_tpr = None
    dev.matvec_prefetch = None
"""


def f64(raw):
    return np.frombuffer(raw, np.float32).astype(np.float64)


def check_staged(engine, fmt, rpt, K, seed, rows=(37, 8, 70), tpr=None, stage=True,
                 prefetch=None):
    """Three weights of one format in one dispatch (rows: their row counts), on normalised x
    (the in_proj case: x times the norm weight staged) and on plain x; K past 2,048 inputs
    spans several tiles, the last one partial. tpr: threads per row (few: each thread walks
    several trips of loads, the next trip's loads in flight while it sums the current one);
    stage False: x read from its buffer, not staged; prefetch: the weights' load level
    (weight_format.prefetch_level)."""
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((n, K)).astype(np.float32) * 0.1 for n in rows]
    x = rng.standard_normal((1, K)).astype(np.float32)
    nw = rng.uniform(0.5, 1.5, K).astype(np.float32)
    code = CODE
    for key, val in (("rpt", rpt), ("fmt", fmt), ("tpr", tpr), ("stage", stage),
                     ("prefetch", prefetch)):
        code = code.replace(f"args['{key}']", repr(val))
    outs, _ = gpu(engine, code,
                  x=x, nw=nw, w0=ws[0], w1=ws[1], w2=ws[2])
    W = [ref.unpack(outs[f"q{g}"], w.shape, fmt) if fmt != "f32" else w.astype(np.float64)
         for g, w in enumerate(ws)]
    x64 = x.astype(np.float64)
    xn = x64 / np.sqrt((x64 ** 2).mean() + 1e-5) * nw
    tol = 2e-6 * np.sqrt(K)
    for g in range(3):
        for key, xin in (("m", x64), ("n", xn)):
            got = f64(outs[f"{key}{g}"]).reshape(1, -1)
            assert np.allclose(got, xin @ W[g].T, atol=tol, rtol=1e-5), \
                (key, g, np.abs(got - xin @ W[g].T).max())
