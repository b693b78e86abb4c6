"""Mamba-1's decode step with dt_proj folded in (selective_scan_step_dtproj in
shaders/selective_scan_step.wgsl) at a low-rank width R large enough for its four-terms-a-trip
loop (R = 100 over 16 lanes: one four-term trip per lane, then a ragged tail; R = 200 for
the eight-term trips of DT_TRIP8, the default: one whole, one ragged), against float64
numpy: outputs and the state updated in place, Mamba-1 (bias, D, gate) and Falcon-Mamba (dt_low,
B and C RMS-normalised), two sequences, with the dt-independent inputs loaded after the dt
reduction (the default) and before it (EARLY: the same sums), and the lane reductions through
subgroup shuffles (selective_scan_step_sg.wgsl: the same sums). Native backend (lavapipe here);
the model fixtures' R of 3 never reach the four-term loop."""
import numpy as np
import pytest

from tests.browser.kernel_harness import runner
from tests.native_support import engine, native as pytestmark  # noqa: F401

gpu = runner("import py_engine.ops.selective_scan as ss")

# the layer's parameters packed as a loaded model's are (nn/mamba1.decode_param_packs): the
# step reads them through one binding
CODE = """
from py_engine.ops.weight_pack import pack_params
pack_params(dev, [T['bias'], T['A_log'], T['D'], T['dt_w']])
y = ss.selective_scan_step(b, T['u'], T['dl'], T['A_log'], T['B'], T['C'], T['h'], T['D'],
                           T['z'], dt_bias=T['bias'], norm_bc_eps={eps}, dt_w=T['dt_w'])
outs.update(y=y, h=T['h'])
"""


def _with_early(early, code, sg=None, trip8=None):
    """code with the step's EARLY loads set (and its subgroup-shuffle reductions when sg is
    not None, its dt terms eight at a time (DT_TRIP8) or not when trip8 is not None), and the
    device's choices put back after (also when the code raises: the engine is shared by the
    module's tests)."""
    import textwrap
    return (f"device.scan_step_early = {early}\ndevice.scan_step_sg = {sg}\n"
            f"device.scan_step_trip8 = {trip8}\ntry:\n" +
            textwrap.indent(code.strip("\n"), "    ") +
            "\nfinally:\n    device.scan_step_early = None\n    device.scan_step_sg = None\n"
            "    device.scan_step_trip8 = None\n")


PLAIN = """
from py_engine.ops.weight_pack import pack_params
pack_params(dev, [T['A_log'], T['dt_w']])
y = ss.selective_scan_step(b, T['u'], T['dl'], T['A_log'], T['B'], T['C'], T['h'],
                           dt_w=T['dt_w'])
outs.update(y=y, h=T['h'])
"""


def _softplus(v):
    return np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))


@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("R", [100, 200])
def test_step_with_wide_dt_rank(engine, eps, early, R):
    rng = np.random.default_rng(11)
    nb, I, N = 2, 40, 16
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)
    d = dict(u=f(nb, I), dl=f(nb, R, sc=0.3), A_log=f(I, N, sc=0.5), B=f(nb, N), C=f(nb, N),
             h=f(nb, I, N), D=f(I), z=f(nb, I), bias=f(I, sc=0.5), dt_w=f(I, R, sc=0.1))
    o, _ = gpu(engine, _with_early(early, CODE.format(eps=eps)), **d)
    g = {k: v.astype(np.float64) for k, v in d.items()}
    dl, Bm, Cm = g["dl"], g["B"], g["C"]
    x = dl @ g["dt_w"].T                                               # [nb, I]
    if eps is not None:
        x = x / np.sqrt((dl ** 2).mean(-1, keepdims=True) + eps)
        Bm = Bm / np.sqrt((Bm ** 2).mean(-1, keepdims=True) + eps)
        Cm = Cm / np.sqrt((Cm ** 2).mean(-1, keepdims=True) + eps)
    dt = _softplus(x + g["bias"])
    A = -np.exp(g["A_log"])
    h = np.exp(dt[..., None] * A) * g["h"] + (dt * g["u"])[..., None] * Bm[:, None, :]
    y = (h * Cm[:, None, :]).sum(-1) + g["D"] * g["u"]
    y = y * g["z"] / (1 + np.exp(-g["z"]))
    assert np.abs(o["y"] - y.ravel()).max() <= 1e-5 * max(1.0, np.abs(y).max())
    assert np.abs(o["h"] - h.ravel()).max() <= 1e-5 * max(1.0, np.abs(h).max())


@pytest.mark.parametrize("early, sg, trip8", [(True, False, False), (False, True, False),
                                              (True, True, False), (False, False, True),
                                              (True, True, True)])
@pytest.mark.parametrize("eps, N, plain, R", [(None, 16, False, 40), (1e-6, 16, False, 40),
                                              (None, 8, False, 40), (1e-6, 4, False, 40),
                                              (None, 16, True, 40), (None, 16, False, 200)])
def test_load_order_and_subgroup_reductions_give_the_same_bits(engine, eps, N, plain, R, early,
                                                               sg, trip8):
    """Against the default kernel's workgroup-memory tree with the dt-independent loads after
    the dt reduction and the dt terms four at a time: EARLY changes when loads issue,
    selective_scan_step_sg.wgsl takes the lane reductions' steps below the subgroup size as
    subgroup shuffles, DT_TRIP8 loads eight dt terms a lane at once (R = 40: one ragged trip,
    where the four-term loop left three terms one by one; R = 200: a whole trip and a ragged
    one) -- none changes a sum: the same bits, also with fewer states than lanes (N = 8, 4: the
    lanes past N load nothing) and without D, z and dt_bias."""
    rng = np.random.default_rng(12)
    nb, I = 2, 24
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)
    d = dict(u=f(nb, I), dl=f(nb, R, sc=0.3), A_log=f(I, N, sc=0.5), B=f(nb, N), C=f(nb, N),
             h=f(nb, I, N), D=f(I), z=f(nb, I), bias=f(I, sc=0.5), dt_w=f(I, R, sc=0.1))
    code = PLAIN if plain else CODE.format(eps=eps)
    base, _ = gpu(engine, _with_early(False, code, sg=False, trip8=False), **d)
    other, _ = gpu(engine, _with_early(early, code, sg=sg, trip8=trip8), **d)
    assert np.abs(base["y"]).max() > 0.01
    assert np.array_equal(base["y"], other["y"]) and np.array_equal(base["h"], other["h"])


TAKES = """
from py_engine.gpu.tensor import Tensor
from py_engine.ops.weight_pack import pack_params
ts = [Tensor.from_list(device, s, [0.5] * math.prod(s)) for s in ((6,), (6, 4), (6,), (6, 3))]
apart = ss.step_takes_dt_proj(device, *ts)
pack_params(device, ts)
together = ss.step_takes_dt_proj(device, *ts)
offs = ss.step_params(*ts)[1]
for t in ts:
    t.release()
result = dict(apart=apart, together=together, offs=offs, align=device.align)
"""


def test_the_step_takes_dt_proj_only_with_its_parameters_in_one_buffer(engine):
    """dt_bias, A_log, D and dt_proj.weight apart: the step cannot read them through its one
    binding, so dt_proj runs as its own dispatch; packed (as at load), it folds in, each read
    at its aligned element offset. 9 storage bindings: every tier (8 excepted) takes it."""
    r = engine.run("import math\nimport py_engine.ops.selective_scan as ss\n" + TAKES)
    a = r["align"] // 4
    assert not r["apart"] and r["together"]
    assert list(r["offs"]) == [0, a, 2 * a, 3 * a]
    from py_engine.ops import selective_scan as ss

    class _Dev:
        limits = {"maxStorageBuffersPerShaderStage": 10}
    assert ss.step_takes_dt_proj(_Dev())
    _Dev.limits = {"maxStorageBuffersPerShaderStage": 8}
    assert not ss.step_takes_dt_proj(_Dev())
