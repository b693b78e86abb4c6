"""MLP activations (py_engine/ops/activations.py) in headless Chromium's WebGPU, against float64
torch autograd: relu2 (y = relu(x)^2, NemotronH's non-gated MLP) and SwiGLU (y = silu(gate) * up),
forward and backward, one dispatch each.

Operands come in as Tensors or as `Cols` views (gate / up = the two halves of one fused [M, 2C]
up-projection output, x a window of a wider matrix) and go out as Tensors or Cols views (dgate /
dup = the two halves of one [M, 2C] gradient buffer, bound once). Tolerance: relative error (to
max |reference|) <= 1e-6. Shapes are tiny: M = 1 and 37, C not a multiple of 64.
"""
import numpy as np
import pytest
import torch

from tests.browser.kernel_harness import rel_err, runner

pytestmark = pytest.mark.browser

gpu = runner("""
import py_engine.ops.activations as act
def zeros(shape):
    n = 1
    for d in shape:
        n *= d
    return Tensor.from_bytes(dev, shape, bytes(4 * n), 'f32')
def counted(fn, *a, **k):
    n0 = b.dispatch_count
    r = fn(*a, **k)
    info.setdefault('dispatches', []).append(b.dispatch_count - n0)
    return r
""")

rng = np.random.default_rng(2468)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def reference(x, gate, up, dy_r, dy_s):
    """float64 torch autograd: relu2 (y, dx) and swiglu (y, dgate, dup)."""
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)  # noqa: E731
    x64, g64, u64 = t(x), t(gate), t(up)
    yr = torch.relu(x64) ** 2
    yr.backward(torch.tensor(np.asarray(dy_r, dtype=np.float64)))
    ys = torch.nn.functional.silu(g64) * u64
    ys.backward(torch.tensor(np.asarray(dy_s, dtype=np.float64)))
    n = lambda a: a.detach().numpy()  # noqa: E731
    return n(yr), n(x64.grad), n(ys), n(g64.grad), n(u64.grad)


def test_relu2_reference_is_transformers_act():
    from transformers.activations import ACT2FN
    x = f32(5, 9)
    assert rel_err(ACT2FN["relu2"](torch.from_numpy(x)).numpy(), reference(x, x, x, x, x)[0]) <= 1e-6


CASES = [  # M, C, views (True: Cols views in and out; False: plain Tensors)
    (1, 40, True),
    (37, 72, True),
    (37, 24, False),
]


@pytest.mark.parametrize("M,C,cols", CASES)
def test_activations(engine, M, C, cols):
    E = 5                                   # extra columns: windows of wider matrices
    gu = f32(M, 2 * C, scale=3.0)           # fused up-projection output [gate | up]
    gu[0, :4] = [30.0, -30.0, 25.0, 0.0]    # both branches of the stable sigmoid, its tails, 0
    xw = f32(M, C + E, scale=2.0)           # relu2 input as columns E..E+C of a wider matrix
    xw[0, E:E + 3] = [0.0, -0.0, 1e-3]
    dy_r, dy_s = f32(M, C), f32(M, C)
    gate, up, x = gu[:, :C], gu[:, C:], xw[:, E:]
    if cols:
        code = f"""
M, C, E = {M}, {C}, {E}
x = Cols(T['xw'], E, C)
gate, up = Cols(T['gu'], 0, C), Cols(T['gu'], C, C)
yr_buf, dx_buf, ys_buf, dgu = zeros((M, C + E)), zeros((M, C + E)), zeros((M, 2 * C)), zeros((M, 2 * C))
counted(act.relu2_forward, b, x, out=Cols(yr_buf, 1, C))
counted(act.relu2_backward, b, T['dy_r'], x, out=Cols(dx_buf, E, C))
counted(act.swiglu_forward, b, gate, up, out=Cols(ys_buf, C, C))
counted(act.swiglu_backward, b, T['dy_s'], gate, up, dgate=Cols(dgu, 0, C), dup=Cols(dgu, C, C))
# outputs returned as new tensors from the same view inputs
yr2 = act.relu2_forward(b, x)
dg2, du2 = act.swiglu_backward(b, T['dy_s'], gate, up)
outs.update(yr_buf=yr_buf, dx_buf=dx_buf, ys_buf=ys_buf, dgu=dgu, yr2=yr2, dg2=dg2, du2=du2)
"""
        arrays = dict(gu=gu, xw=xw, dy_r=dy_r, dy_s=dy_s)
    else:
        code = """
yr = counted(act.relu2_forward, b, T['x'])
dx = counted(act.relu2_backward, b, T['dy_r'], T['x'])
ys = counted(act.swiglu_forward, b, T['gate'], T['up'])
dg, du = counted(act.swiglu_backward, b, T['dy_s'], T['gate'], T['up'])
outs.update(yr=yr, dx=dx, ys=ys, dg=dg, du=du)
"""
        arrays = dict(x=np.ascontiguousarray(x), gate=np.ascontiguousarray(gate), up=np.ascontiguousarray(up),
                      dy_r=dy_r, dy_s=dy_s)
    o, info = gpu(engine, code, **arrays)
    r_yr, r_dx, r_ys, r_dg, r_du = reference(x, gate, up, dy_r, dy_s)
    assert info["dispatches"] == [1, 1, 1, 1]
    tol = 1e-6
    if cols:
        yr_buf = o["yr_buf"].reshape(M, C + E)
        dx_buf = o["dx_buf"].reshape(M, C + E)
        ys_buf = o["ys_buf"].reshape(M, 2 * C)
        dgu = o["dgu"].reshape(M, 2 * C)
        assert rel_err(yr_buf[:, 1:1 + C], r_yr) <= tol
        assert rel_err(dx_buf[:, E:], r_dx) <= tol
        assert rel_err(ys_buf[:, C:], r_ys) <= tol
        assert rel_err(dgu[:, :C], r_dg) <= tol and rel_err(dgu[:, C:], r_du) <= tol
        # only the windows were written
        assert np.all(yr_buf[:, :1] == 0) and np.all(yr_buf[:, 1 + C:] == 0)
        assert np.all(dx_buf[:, :E] == 0) and np.all(ys_buf[:, :C] == 0)
        assert np.array_equal(o["yr2"].reshape(M, C), yr_buf[:, 1:1 + C])
        assert np.array_equal(o["dg2"].reshape(M, C), dgu[:, :C])
        assert np.array_equal(o["du2"].reshape(M, C), dgu[:, C:])
    else:
        assert rel_err(o["yr"], r_yr) <= tol and rel_err(o["dx"], r_dx) <= tol
        assert rel_err(o["ys"], r_ys) <= tol
        assert rel_err(o["dg"], r_dg) <= tol and rel_err(o["du"], r_du) <= tol
