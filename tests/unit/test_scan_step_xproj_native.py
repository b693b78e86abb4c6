"""Mamba-1's decode step with x_proj folded in (py_engine/ops/scan_step_xproj.py,
shaders/selective_scan_step_xproj.wgsl): y and the state updated in place against float64
numpy of x_proj -> dt_proj -> scan on the weights as stored, and against the two-dispatch path
(x_proj's mat-vec, then the step with dt_proj inside) on the same GPU, for every weight format,
with Falcon-Mamba's dt_low/B/C norms, two sequences, R + 2N up to the kernel's 160 rows and a
width I whose rows take the four-chunks-a-trip loop (f32, f16, bf16, q8) or only its tail (q4).
And a model: greedy decode through the folded step equals the two-dispatch decode's ids, the
dispatch count one fewer per layer. Native backend (lavapipe here), the real-GPU rule forced."""
import numpy as np
import pytest

from tests.browser.kernel_harness import runner
from tests.browser.xproj_fold_cases import check_x_proj_fold
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401
from tests.reference import weight_format_numpy as ref

gpu = runner("from py_engine.ops import weight_format as wf\n"
             "from py_engine.ops import linear as L\n"
             "import py_engine.ops.selective_scan as ss\n"
             "import py_engine.ops.scan_step_xproj as X", decode=False)
FIX = REPO / "tests" / "fixtures" / "models"

CODE = """
Q = [wf.quantize(b, T[n], FMT) for n in ('wdt', 'wB', 'wC')]
outs['q0'], outs['q1'], outs['q2'] = Q if FMT != 'f32' else (None,) * 3
dev.force_matvec = True
try:
    info['folds'] = X.step_folds_x_proj(dev, T['u'], Q, T['dt_w'])
    y = X.selective_scan_step_xproj(b, T['u'], Q, T['dt_w'], T['A_log'], T['h'], D=T['D'],
                                    z_t=T['z'], dt_bias=T['bias'], norm_bc_eps=EPS)
    dl, Bt, Ct = L.linear_multi(b, T['u'], Q)
    y2 = ss.selective_scan_step(b, T['u'], dl, T['A_log'], Bt, Ct, T['h2'], D=T['D'],
                                z_t=T['z'], dt_bias=T['bias'], norm_bc_eps=EPS, dt_w=T['dt_w'])
finally:
    dev.force_matvec = False
outs.update(y=y, h=T['h'], y2=y2, h2=T['h2'])
"""


def _f64(raw):
    return np.frombuffer(raw, np.float32).astype(np.float64)


def _softplus(v):
    return np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))


def _reference(g, W, eps):
    """float64 x_proj -> (Falcon's norms) -> dt_proj -> scan step -> gate."""
    u = g["u"]
    dl, Bm, Cm = (u @ w.T for w in W)
    x = dl @ g["dt_w"].T
    if eps is not None:
        x = x / np.sqrt((dl ** 2).mean(-1, keepdims=True) + eps)
        Bm = Bm / np.sqrt((Bm ** 2).mean(-1, keepdims=True) + eps)
        Cm = Cm / np.sqrt((Cm ** 2).mean(-1, keepdims=True) + eps)
    dt = _softplus(x + g["bias"])
    A = -np.exp(g["A_log"])
    h = np.exp(dt[..., None] * A) * g["h"] + (dt * u)[..., None] * Bm[:, None, :]
    y = (h * Cm[:, None, :]).sum(-1) + g["D"] * u
    return y * g["z"] / (1 + np.exp(-g["z"])), h


@pytest.mark.parametrize("fmt, R, eps", [
    ("f32", 48, None), ("f16", 48, None), ("f16", 128, 1e-6), ("bf16", 50, None),
    ("q8", 48, 1e-6), ("q4", 48, None), ("q4", 128, None)])
def test_folded_step_equals_float64_and_the_two_dispatch_path(engine, fmt, R, eps):
    rng = np.random.default_rng(21)
    nb, I, N = 2, 1024, 16
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)
    d = dict(u=f(nb, I), A_log=f(I, N, sc=0.5), h=f(nb, I, N), D=f(I), z=f(nb, I),
             bias=f(I, sc=0.5), dt_w=f(I, R, sc=0.1),
             wdt=f(R, I, sc=0.05), wB=f(N, I, sc=0.05), wC=f(N, I, sc=0.05))
    d["h2"] = d["h"].copy()
    o, info = gpu(engine, CODE.replace("FMT", repr(fmt)).replace("EPS", repr(eps)), **d)
    assert info["folds"] is True         # the real-GPU rule: W_x well under FOLD_BYTES
    W = [ref.unpack(o[f"q{k}"], d[n].shape, fmt) if fmt != "f32" else d[n].astype(np.float64)
         for k, n in enumerate(("wdt", "wB", "wC"))]
    g = {k: v.astype(np.float64) for k, v in d.items()}
    y, h = _reference(g, W, eps)
    got_y, got_h = _f64(o["y"]), _f64(o["h"])
    assert np.abs(got_y - y.ravel()).max() <= 2e-5 * max(1.0, np.abs(y).max())
    assert np.abs(got_h - h.ravel()).max() <= 2e-5 * max(1.0, np.abs(h).max())
    # the two-dispatch path sums x_proj in another order: equal to f32 rounding
    assert np.abs(got_y - _f64(o["y2"])).max() <= 1e-5 * max(1.0, np.abs(y).max())
    assert np.abs(got_h - _f64(o["h2"])).max() <= 1e-5 * max(1.0, np.abs(h).max())


REFUSED = """
dev.force_matvec = True
try:
    Q = [T['wdt'], T['wB'], T['wC']]
    info['big'] = X.step_folds_x_proj(dev, T['u'], Q, T['dt_w'])
    try:
        X.selective_scan_step_xproj(b, T['u'], Q, T['dt_w'], T['A_log'], T['h'])
        info['raised'] = None
    except ValueError as e:
        info['raised'] = str(e)
finally:
    dev.force_matvec = False
"""


def test_rows_past_the_kernel_copy_are_not_folded(engine):
    """R + 2N = 161 > 160 rows: the rule says no and the op refuses by name."""
    rng = np.random.default_rng(3)
    I, N, R = 64, 16, 129
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    _, info = gpu(engine, REFUSED, u=f(1, I), A_log=f(I, N), h=f(1, I, N), dt_w=f(I, R),
                  wdt=f(R, I), wB=f(N, I), wC=f(N, I))
    assert info["big"] is False
    assert "step_folds_x_proj" in info["raised"]



@pytest.mark.parametrize("fmt", ["f32", "f16", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied", "mamba-d24-untied"])
def test_models_decode_the_same_with_x_proj_folded_in(engine, name, fmt):
    """tests/browser/xproj_fold_cases.check_x_proj_fold: the same logits, states and greedy
    tokens as the two-dispatch decode, one dispatch fewer per layer, transformers' logits."""
    check_x_proj_fold(engine, FIX / name, fmt)
