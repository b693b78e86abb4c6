"""The decode mat-vec with x staged in workgroup memory (STAGE in shaders/lib/matvec_rows.wgsl,
on by rule for narrow formats on tall matrices: py_engine/ops/weight_format.stage_x) against float64 numpy, shared by
tests/browser/test_kernels_weight_format.py (SwiftShader, the kernel forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.kernel_harness import runner
from tests.reference import weight_format_numpy as ref

gpu = runner("from py_engine.ops import weight_format as wf\nfrom py_engine.ops import linear as L\n"
             "from py_engine.ops.rmsnorm import NormedRows", decode=False)


def with_knobs(body, **knobs):
    """Snippet: `body` run with the mat-vec forced (device.force_matvec) and the device's
    matvec_<name> attributes set from knobs, all reset after, also when body fails."""
    sets = "".join(f"dev.matvec_{k} = {v!r}\n" for k, v in knobs.items())
    resets = "".join(f"    dev.matvec_{k} = None\n" for k in knobs)
    body = "".join("    " + line + "\n" for line in body.strip("\n").splitlines())
    return (f"dev.force_matvec = True\n{sets}try:\n{body}"
            f"finally:\n    dev.force_matvec = False\n{resets}")


CODE = """
Q = [wf.quantize(b, T[n], FMT) for n in ('w0', 'w1', 'w2')]
outs['q0'], outs['q1'], outs['q2'] = (Q if Q[0].dtype != 'f32' else (None,) * 3)
outs['n0'], outs['n1'], outs['n2'] = L.linear_multi(b, NormedRows(T['x'], T['nw'], 1e-5), Q)
outs['m0'], outs['m1'], outs['m2'] = L.linear_multi(b, T['x'], Q)
"""


def random_case(seed, rows, K):
    """Weights [n, K] per n in rows, one x row [1, K] and a norm weight [K], from `seed`."""
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((n, K)).astype(np.float32) * 0.1 for n in rows]
    x = rng.standard_normal((1, K)).astype(np.float32)
    nw = rng.uniform(0.5, 1.5, K).astype(np.float32)
    return ws, x, nw


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
    ws, x, nw = random_case(seed, rows, K)
    code = with_knobs(CODE.replace("FMT", repr(fmt)), stage=stage, rpt=rpt, tpr=tpr,
                      prefetch=prefetch)
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


SG_CODE = """
Q = [wf.quantize(b, T[n], FMT) for n in ('w0', 'w1')]
outs['q0'], outs['q1'] = (Q if Q[0].dtype != 'f32' else (None,) * 2)
for k, sg, late in (('tree', False, False), ('sg', True, False), ('late', True, True)):
    dev.matvec_sg = sg
    dev.matvec_norm_in_stage = late
    dev.matvec_stage = True if late else STAGE
    outs[k + 'n0'], outs[k + 'n1'] = L.linear_multi(b, NormedRows(T['x'], T['nw'], 1e-5), Q)
    outs[k + 'm0'], outs[k + 'm1'] = L.linear_multi(b, T['x'], Q)
"""


def check_subgroup_tree(engine, fmt, tpr, K=2304, rows=(37, 70), seed=3, stage=None):
    """The mat-vec's reductions with their steps below the subgroup size as subgroup shuffles
    (SG in shaders/lib/matvec_rows.wgsl) give the workgroup-memory tree's results bit for bit:
    the norm prologue's sum over the whole workgroup and the rows' sums over `tpr` lanes (more
    or fewer than a subgroup), on normalised and plain x; and both are the float64 product.
    So is x staged with its squares summed in the staging (NORM_IN_STAGE, 'late'), to rounding.
    stage: x staged (True / False) or the engine's rule (None)."""
    ws, x, nw = random_case(seed, rows, K)
    code = with_knobs(SG_CODE.replace("FMT", repr(fmt)).replace("STAGE", repr(stage)),
                      tpr=tpr, sg=None, norm_in_stage=None, stage=None)
    outs, _ = gpu(engine, code, x=x, nw=nw, w0=ws[0], w1=ws[1])
    x64 = x.astype(np.float64)
    xn = x64 / np.sqrt((x64 ** 2).mean() + 1e-5) * nw
    W = [ref.unpack(outs[f"q{g}"], w.shape, fmt) if fmt != "f32" else w.astype(np.float64)
         for g, w in enumerate(ws)]
    tol = 2e-6 * np.sqrt(K)
    for key, xin in (("m", x64), ("n", xn)):
        for g in range(2):
            tree, sg = outs[f"tree{key}{g}"], outs[f"sg{key}{g}"]
            assert tree == sg, (fmt, tpr, key, g, np.abs(f64(tree) - f64(sg)).max())
            got = f64(sg).reshape(1, -1)
            want = xin @ W[g].T
            assert np.allclose(got, want, atol=tol, rtol=1e-5), \
                (fmt, tpr, key, g, np.abs(got - want).max())
            late = f64(outs[f"late{key}{g}"]).reshape(1, -1)
            assert np.allclose(late, want, atol=tol, rtol=1e-5), \
                ("late", fmt, tpr, key, g, np.abs(late - want).max())
            if key == "m":                     # no norm: the staged sums alone
                assert np.allclose(late, got, atol=1e-6 * np.sqrt(K), rtol=1e-6)


SAME_BITS_CODE = """
Q = [wf.quantize(b, T[n], FMT) for n in ('w0', 'w1')]
for k, v in (('a', VALUE_A), ('b', VALUE_B)):
    setattr(dev, 'matvec_' + KNOB, v)
    outs[k + 'n0'], outs[k + 'n1'] = L.linear_multi(b, NormedRows(T['x'], T['nw'], 1e-5), Q)
    outs[k + 'm0'], outs[k + 'm1'] = L.linear_multi(b, T['x'], Q)
"""


def check_same_bits(engine, fmt, rpt, tpr, stage, K, knob, a, b, rows=(37, 70), seed=4):
    """The mat-vec with device.matvec_<knob> = a and = b gives the same bits, on normalised x
    (staged: its squares summed in the staging; unstaged: the prologue) and plain x -- for the
    knobs that only change when loads issue, such as TAIL (a walk's last chunks as one trip, the
    norm prologue's x four vec4s at a time). K and tpr pick how many chunks each thread walks:
    whole trips, and how many left after them. (Not the PREFETCH levels: the same additions,
    but lavapipe's compiler fuses some multiply-adds differently in their loops -- 1 ulp apart
    on normalised f16 rows -- so tests/unit/test_matvec_staged_native.py holds them to
    float64.)"""
    ws, x, nw = random_case(seed, rows, K)
    body = (SAME_BITS_CODE.replace("FMT", repr(fmt)).replace("KNOB", repr(knob))
            .replace("VALUE_A", repr(a)).replace("VALUE_B", repr(b)))
    code = with_knobs(body, tpr=tpr, rpt=rpt, stage=stage, **{knob: None})
    outs, _ = gpu(engine, code, x=x, nw=nw, w0=ws[0], w1=ws[1])
    for key in ("n", "m"):
        for g in range(2):
            ra, rb = outs[f"a{key}{g}"], outs[f"b{key}{g}"]
            assert np.abs(f64(ra)).max() > 0.05
            assert ra == rb, (knob, fmt, rpt, tpr, key, g, np.abs(f64(ra) - f64(rb)).max())
