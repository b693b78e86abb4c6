"""The first kernels, run in headless Chromium's WebGPU, against numpy float64.

f32 tolerances (issue 2): relative error <= 1e-5 elementwise, <= 1e-4 for reductions and
matmul at K <= 4096. "Relative" is measured against the scale of the reference output.
"""
import numpy as np
import pytest

pytestmark = pytest.mark.browser

RUN_OP = """
from py_engine.gpu.tensor import Tensor
import py_engine.ops.{module} as m
dev = device
T = {{k: Tensor.from_bytes(dev, shp, args['data'][k], dt) for k, (shp, dt) in args['spec'].items()}}
b = dev.batch()
outs = {call}
outs = outs if isinstance(outs, tuple) else (outs,)
b.submit()
result = [await o.to_bytes() if o is not None else None for o in outs]
for t in list(T.values()) + [o for o in outs if o is not None]:
    t.release()
"""


def run_op(engine, module, call, **arrays):
    spec, data = {}, {}
    for k, a in arrays.items():
        dt = {np.float32: "f32", np.int32: "i32", np.uint32: "u32"}[a.dtype.type]
        spec[k] = (list(a.shape), dt)
        data[k] = a.tobytes()
    out = engine.run(RUN_OP.format(module=module, call=call), spec=spec, data=data)
    return [np.frombuffer(o, dtype=np.float32) if o is not None else None for o in out]


def rel_err(got, ref, scale=None):
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max() if scale is None else scale, 1e-30)
    return np.abs(got.reshape(ref.shape) - ref).max() / scale


rng = np.random.default_rng(0)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


MATMUL_SHAPES = [(1, 1, 1), (1, 37, 5), (3, 64, 33), (33, 70, 31), (64, 128, 96), (2, 4096, 8)]


@pytest.mark.parametrize("M,K,N", MATMUL_SHAPES)
def test_linear_forward_and_backward(engine, M, K, N):
    x, w, b, dy = f32(M, K), f32(N, K), f32(N), f32(M, N)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    y, dx, dw, db = run_op(
        engine, "linear",
        "(m.linear_forward(b, T['x'], T['w'], T['b']), m.linear_backward_input(b, T['dy'], T['w']),"
        " m.linear_backward_weight(b, T['dy'], T['x']), m.linear_backward_bias(b, T['dy']))",
        x=x, w=w, b=b, dy=dy)
    assert rel_err(y, x64 @ w64.T + b) <= 1e-4
    assert rel_err(dx, dy64 @ w64) <= 1e-4
    assert rel_err(dw, dy64.T @ x64) <= 1e-4
    assert rel_err(db, dy64.sum(0)) <= 1e-4


def test_linear_accumulates_into_existing_gradient(engine):
    x, dy, acc = f32(5, 7), f32(5, 3), f32(3, 7)
    (dw,) = run_op(engine, "linear", "m.linear_backward_weight(b, T['dy'], T['x'], out=T['acc'], accumulate=True)",
                   x=x, dy=dy, acc=acc)
    assert rel_err(dw, acc.astype(np.float64) + dy.astype(np.float64).T @ x) <= 1e-4


@pytest.mark.parametrize("n", [1, 255, 257, 10_000])
def test_elementwise(engine, n):
    a, bb, dy = f32(n, scale=4.0), f32(n), f32(n)
    a[: min(n, 4)] = [30.0, -30.0, 20.5, 1e-3][: min(n, 4)]  # both softplus branches + tails
    add, mul, silu, dsilu, sp, dsp = run_op(
        engine, "elementwise",
        "(m.add(b, T['a'], T['bb']), m.mul(b, T['a'], T['bb']), m.silu(b, T['a']),"
        " m.silu_backward(b, T['a'], T['dy']), m.softplus(b, T['a']), m.softplus_backward(b, T['a'], T['dy']))",
        a=a, bb=bb, dy=dy)
    a64, b64, dy64 = a.astype(np.float64), bb.astype(np.float64), dy.astype(np.float64)
    sig = 1 / (1 + np.exp(-a64))
    ref_sp = np.where(a64 > 20, a64, np.log1p(np.exp(np.minimum(a64, 20))))
    # Each value is compared relative to the magnitude of the terms that make it up, so a
    # result that cancels to ~0 (a + b with b ~ -a, SiLU' near x = -1.28) is judged by the
    # rounding its inputs allow, not divided by ~0.
    cases = {
        "add": (add, a64 + b64, np.abs(a64) + np.abs(b64)),
        "mul": (mul, a64 * b64, np.abs(a64 * b64)),
        "silu": (silu, a64 * sig, np.abs(a64 * sig)),
        "silu_backward": (dsilu, dy64 * sig * (1 + a64 * (1 - sig)),
                          np.abs(dy64 * sig) * (1 + np.abs(a64) * (1 - sig))),
        "softplus": (sp, ref_sp, np.abs(ref_sp)),
        "softplus_backward": (dsp, dy64 * np.where(a64 > 20, 1.0, sig), np.abs(dy64 * sig)),
    }
    for name, (got, ref, mag) in cases.items():
        err = np.abs(got - ref) / np.maximum(mag, 1e-30)
        assert err.max() <= 1e-5, (name, err.max(), int(err.argmax()))


@pytest.mark.parametrize("rows,dim", [(1, 1), (3, 64), (5, 100), (17, 768)])
@pytest.mark.parametrize("weighted", [True, False])
def test_rmsnorm(engine, rows, dim, weighted):
    x, w, dy = f32(rows, dim), f32(dim), f32(rows, dim)
    eps = 1e-5
    call = ("(lambda y_r: (y_r[0], y_r[1]) + m.rmsnorm_backward(b, T['dy'], T['x'], y_r[1], {w}))"
            "(m.rmsnorm_forward(b, T['x'], {w}, eps=1e-5))").format(w="T['w']" if weighted else "None")
    y, rstd, dx, dw = run_op(engine, "rmsnorm", call, x=x, w=w, dy=dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    w64 = w.astype(np.float64) if weighted else np.ones(dim)
    r = 1 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + eps)
    assert rel_err(y, x64 * r * w64) <= 1e-5
    assert rel_err(rstd, r[:, 0]) <= 1e-5
    g = dy64 * w64
    ref_dx = r * g - x64 * r ** 3 * (g * x64).sum(-1, keepdims=True) / dim
    # dx = r*g - (a term that nearly cancels it at dim 1): judge by the terms' scale
    assert rel_err(dx, ref_dx, scale=np.abs(r * g).max()) <= 1e-4
    if weighted:
        assert rel_err(dw, (dy64 * x64 * r).sum(0)) <= 1e-4
    else:
        assert dw is None


@pytest.mark.parametrize("V,D,T", [(1, 1, 1), (11, 65, 9), (300, 32, 40)])
def test_embedding(engine, V, D, T):
    w, dy = f32(V, D), f32(T, D)
    ids = rng.integers(0, V, T).astype(np.uint32)
    ids[: min(T, 3)] = ids[0]  # repeated ids must accumulate
    dw0 = np.zeros((V, D), np.float32)
    y, dw = run_op(engine, "embedding",
                   "(m.embedding_forward(b, T['ids'], T['w']), m.embedding_backward(b, T['ids'], T['dy'], T['dw']))",
                   ids=ids, w=w, dy=dy, dw=dw0)
    assert np.array_equal(y.reshape(T, D), w[ids])
    ref = np.zeros((V, D))
    np.add.at(ref, ids, dy.astype(np.float64))
    assert rel_err(dw, ref) <= 1e-5


@pytest.mark.parametrize("T,V", [(1, 1), (1, 7), (9, 101), (33, 1000)])
def test_cross_entropy(engine, T, V):
    logits = f32(T, V, scale=3.0)
    targets = rng.integers(0, V, T).astype(np.int32)
    if T > 2:
        targets[1] = -100  # ignored
    loss, stats, dx = run_op(
        engine, "cross_entropy",
        "(lambda ls: (ls[0], ls[1], m.cross_entropy_backward(b, T['x'], T['t'], ls[1], ls[0])))"
        "(m.cross_entropy_forward(b, T['x'], T['t']))", x=logits, t=targets)
    x64 = logits.astype(np.float64)
    lse = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
    valid = targets >= 0
    per = lse - x64[np.arange(T), np.maximum(targets, 0)]
    ref_loss = per[valid].mean()
    assert abs(loss[0] - ref_loss) <= 1e-4 * max(1.0, abs(ref_loss))
    assert loss[1] == valid.sum()
    sm = np.exp(x64 - lse[:, None])
    sm[np.arange(T), np.maximum(targets, 0)] -= 1
    ref_dx = np.where(valid[:, None], sm, 0) / valid.sum()
    assert rel_err(dx, ref_dx) <= 1e-4


@pytest.mark.parametrize("n", [1, 255, 4097, 300_000])
def test_sum_and_mean(engine, n):
    x = f32(n)
    s, mean = run_op(engine, "reduce", "(m.reduce_sum(b, T['x']), m.reduce_sum(b, T['x'], mean=True))", x=x)
    ref = x.astype(np.float64).sum()
    scale = np.abs(x).astype(np.float64).sum()
    assert abs(s[0] - ref) <= 1e-4 * scale
    assert abs(mean[0] - ref / n) <= 1e-4 * scale / n
