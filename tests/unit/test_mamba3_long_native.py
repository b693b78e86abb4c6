"""Issue 12 regression: Mamba-3 scans over long sequences on the native backend (wgpu-py on
lavapipe here), against the float64 reference tests/reference/mamba3_numpy.py.

The bug: lavapipe (Mesa llvmpipe) ends every loop of a shader invocation once that invocation's
loops together have made 65535 passes (one shared counter, LP_MAX_TGSI_LOOP_ITERATIONS), silently.
A scan that walked a whole sequence in one dispatch went wrong from token 99 (serial, N = 128),
~336 (chunked) and ~30 (backward, P 64, N 128). The ops now walk token windows
(py_engine/ops/mamba3_windows.py); these cases run several windows each: serial SISO at T = 200,
chunked at T = 400, MIMO at T = 140, 200 decode steps, and the backward at T = 130 -- all at
d_state 128. SwiftShader (the browser tests) has no such counter, so only a native run catches it.
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter.
"""
import math

import numpy as np
import pytest

from py_engine.ops.mamba3_windows import (LOOP_PASS_BUDGET, chunk_passes_per_chunk,
                                          serial_passes_per_token, windows)
from py_engine.ops.mamba3 import chunk_len
from tests.browser import test_kernels_mamba3 as K
from tests.browser import test_kernels_mamba3_backward as KB
from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import mamba3_numpy as m3
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

gpu = runner()
TOL = 1e-4
A_FLOOR = 1e-4
rng = np.random.default_rng(1212)


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def siso_inputs(nb, T, H, P, G, N, S):
    raw = dict(x=f32(nb, T, H * P), Bn=f32(nb, T, G * N), Cn=f32(nb, T, G * N), dd_dt=f32(nb, T, H),
               dd_A=f32(nb, T, H), trap=f32(nb, T, H), angles=f32(nb, T, S))
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, N, scale=0.5), C_bias=f32(H, N, scale=0.5))
    state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                 ssm=f32(nb, H, P, N), k=f32(nb, H, N), v=f32(nb, H, P))
    return raw, par, state


def first_bad_token(got, ref):
    """The first token whose error is over TOL of the reference's scale (None: none)."""
    err = np.abs(np.asarray(got).reshape(ref.shape) - ref).reshape(ref.shape[0], ref.shape[1], -1)
    bad = np.nonzero(err.max(axis=(0, 2)) > TOL * np.abs(ref).max())[0]
    return int(bad[0]) if len(bad) else None


def test_windows_cover_the_sequence_within_budget():
    """Windows are contiguous, cover [0, T), keep whole chunks, and stay within the pass budget."""
    per = serial_passes_per_token(128, 64, 32)
    ws = windows(1000, per)
    assert ws[0][0] == 0 and sum(n for _, n in ws) == 1000 and len(ws) > 1
    assert all(a + n == b for (a, n), (b, _) in zip(ws, ws[1:]))
    assert all(n * per <= LOOP_PASS_BUDGET for _, n in ws)
    L = 8
    cw = windows(1001, chunk_passes_per_chunk(L, 128, 64, 32), unit=L)
    assert all(t0 % L == 0 for t0, _ in cw) and sum(n for _, n in cw) == 1001
    assert windows(5, per) == [(0, 5)]      # short sequences: one dispatch, as before


@pytest.mark.parametrize("T", [200, 400])
def test_mamba3_long_forward_serial_and_chunked(engine, T):
    """Serial (T 200: 5 windows; T 400 too) and chunked (T 400: 3 windows) == float64, from a random
    initial state, outputs and all four final states, at the real head's d_state 128."""
    nb, H, P, G, N, rf, heavy = 1, 2, 8, 1, 128, 0.5, True
    S = K.n_angles(N, rf)
    assert len(windows(T, serial_passes_per_token(N, P, S))) > 1
    raw, par, state = siso_inputs(nb, T, H, P, G, N, S)
    code = K.CHUNK_CODE.format(H=H, G=G, N=N, S=S, A_floor=A_FLOOR, heavy=heavy)
    o, _ = gpu(engine, code, **raw, **par, **{"s_" + k: v for k, v in state.items()})
    ry, rst = K.reference(dict(raw, **par), nb, T, H, P, G, N, S, heavy, state)
    for path in ("serial", "chunked"):
        assert first_bad_token(o[f"{path}_y"], ry) is None, path
        assert rel_err(o[f"{path}_y"], ry) <= TOL, path
        K.check_states(o, f"{path}_", rst)
    assert np.array_equal(o["None_y"], o["chunked_y"])   # the default prefill path: chunked


STEP_CODE = """
import types
import py_engine.ops.mamba3 as m3
from py_engine.ops.conv1d import Cols
nb, Tn, H, P, N, S = {nb}, {T}, {H}, {P}, {N}, {S}
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads=H,
          n_groups=1, S=S, A_floor={A_floor}, heavy_tail=True)
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
st = types.SimpleNamespace()
for n in ('angle', 'ssm', 'k', 'v'):
    t = Tensor(dev, T['s_' + n].shape)
    b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
    setattr(st, n, t)
ys = Tensor(dev, (nb, Tn * H * P))
flat = {{k: Tensor(dev, (nb, Tn * T[k].shape[-1]), buffer=T[k].buffer, offset=T[k].offset) for k in order}}
for t in range(Tn):
    ins = [Cols(flat[k], t * T[k].shape[-1], T[k].shape[-1], (nb, T[k].shape[-1])) for k in order]
    m3.mamba3_step(b, *ins, st, out=Cols(ys, t * H * P, H * P, (nb, H * P)), **kw)
    if t % 50 == 49:
        b.submit()
outs['ys'] = ys
outs.update({{'s_' + n: getattr(st, n) for n in ('angle', 'ssm', 'k', 'v')}})
"""


def test_mamba3_200_decode_steps(engine):
    """200 one-token steps (mamba3_step) from a random state == the float64 recurrence: every
    output and the final angle / ssm / k / v states (the step kernel never had the bug: one token
    per invocation; this pins it down for long decodes)."""
    nb, T, H, P, N, S = 1, 200, 2, 8, 128, 32
    raw, par, state = siso_inputs(nb, T, H, P, 1, N, S)
    code = STEP_CODE.format(nb=nb, T=T, H=H, P=P, N=N, S=S, A_floor=A_FLOOR)
    o, _ = gpu(engine, code, **raw, **par, **{"s_" + k: v for k, v in state.items()})
    ry, rst = K.reference(dict(raw, **par), nb, T, H, P, 1, N, S, True, state)
    assert first_bad_token(o["ys"], ry) is None
    assert rel_err(o["ys"], ry) <= TOL
    K.check_states(o, "s_", rst)


MIMO_CODE = """
import types
import py_engine.ops.mamba3 as m3
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads={H},
          n_groups={G}, S={S}, A_floor={A_floor}, heavy_tail=True, mimo_x=T['mimo_x'])
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
st = types.SimpleNamespace()
for n in ('angle', 'ssm', 'k', 'v'):
    t = Tensor(dev, T['s_' + n].shape)
    b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
    setattr(st, n, t)
n0 = b.dispatch_count
y, _ = m3.mamba3_forward(b, *[T[k] for k in order], state=st, path={path!r}, **kw)
info['dispatches'] = b.dispatch_count - n0
outs['y'] = y
outs.update({{'f_' + n: getattr(st, n) for n in ('angle', 'ssm', 'k', 'v')}})
"""


@pytest.mark.parametrize("path", ["serial", "chunked"])
def test_mamba3_mimo_long_forward(engine, path):
    """MIMO (rank 2, d_state 128) prefill, serial and chunked (L 4): T = 140 over several windows
    == the float64 scan_sequential_mimo, outputs and final states, from a random initial state."""
    nb, T, H, P, G, N, R = 1, 140, 2, 8, 1, 128, 2
    S = K.n_angles(N, 0.5)
    hg = np.arange(H) // (H // G)
    raw = dict(x=f32(nb, T, H * P), Bn=f32(nb, T, R * G * N), Cn=f32(nb, T, R * G * N),
               dd_dt=f32(nb, T, H), dd_A=f32(nb, T, H), trap=f32(nb, T, H), angles=f32(nb, T, S))
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, R, N, scale=0.5), C_bias=f32(H, R, N, scale=0.5),
               mimo_x=f32(H, R, P, scale=0.5))
    state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                 ssm=f32(nb, H, P, N), k=f32(nb, R, H, N), v=f32(nb, H, P))
    code = MIMO_CODE.format(H=H, G=G, S=S, A_floor=A_FLOOR, path=path)
    o, info = gpu(engine, code, **raw, **par, **{"s_" + k: v for k, v in state.items()})
    L = chunk_len(N, S, R)
    n_win = len(windows(T, serial_passes_per_token(N, P, S, R)) if path == "serial" else
                windows(T, chunk_passes_per_chunk(L, N, P, S, R), unit=L))
    assert n_win > 1 and info["dispatches"] == 1 + n_win   # prep, then the windows
    DT = m3.softplus(d64(raw["dd_dt"][0]) + d64(par["dt_bias"]))
    A = np.minimum(-m3.heavy_tail(d64(raw["dd_A"][0])), -A_FLOOR)
    pre = dict(x=d64(raw["x"][0]).reshape(T, H, P),
               Bt=d64(raw["Bn"][0]).reshape(T, R, G, N)[:, :, hg] + d64(par["B_bias"]).transpose(1, 0, 2),
               Ct=d64(raw["Cn"][0]).reshape(T, R, G, N)[:, :, hg] + d64(par["C_bias"]).transpose(1, 0, 2),
               DT=DT, ADT=A * DT, lam=m3.sigmoid(d64(raw["trap"][0])),
               theta=np.tanh(d64(raw["angles"][0])) * math.pi)
    ry, rst = m3.scan_sequential_mimo(pre, dict(D=d64(par["D"]), mimo_x=d64(par["mimo_x"])),
                                      {k: d64(v[0]) for k, v in state.items()})
    ry = ry.reshape(1, T, R * H * P)                      # [T, R, H, P]: rank-major rows, as y
    assert first_bad_token(o["y"], ry) is None
    assert rel_err(o["y"], ry) <= TOL
    assert K.angle_err(o["f_angle"], rst["angle"]) <= TOL
    for n in ("ssm", "k", "v"):
        assert rel_err(o["f_" + n], rst[n]) <= TOL, n


def test_mamba3_long_backward(engine):
    """The scan backward at T = 130 (phase A and B over several windows each; P 32, d_state 128),
    every gradient vs torch float64 autograd of the reference recurrence (the browser test's case
    function, whose dispatch count follows the windows)."""
    from py_engine.ops.mamba3_backward import _scan_windows
    assert len(_scan_windows(130, 128, 32, 32, 1)) > 2
    KB.test_mamba3_backward_vs_torch(engine, 1, 130, 1, 32, 1, 128, 0.5, True, True, False)



def test_backward_work_keeps_chunk_checkpoints_not_every_state():
    """The backward's work holds ceil(T/C) checkpoints + C recomputed states per (sequence, head)
    (C = ceil(sqrt(T))), not all T + 1 states: at the 187m head shape and T 1024, 64 states per head
    instead of 1025 (about 103 MiB of work for 24 heads, was about 840 MiB)."""
    from py_engine.ops.mamba3_backward import _work_layout, ckpt_len
    T, H, P, N, S = 1024, 24, 64, 128, 32
    C = ckpt_len(T, N, P, S)
    off, total = _work_layout(1, T, H, P, N, S, C=C)
    assert C == 32
    states = (off["phi0"] - off["ck"]) + (total - off["loc"])       # the ck and loc regions
    assert states == H * (T // C + C) * P * N
    assert total * 4 < 110 * 2 ** 20


def test_mamba3_long_backward_longest_checkpoint_interval(engine):
    """T = 130 at the longest checkpoint interval lavapipe allows here (C = max_ckpt, 81): a
    recompute burst near the pass budget, a 49-token last chunk and phase-B windows that start in
    the middle of a chunk (its states recomputed by the previous window) == torch float64."""
    from py_engine.ops.mamba3_backward import _scan_windows, max_ckpt
    C = max_ckpt(128, 32, 32)
    assert 65 <= C < 130
    rev = [b for a, b in _scan_windows(130, 128, 32, 32, 1, C) if b[0] < b[1]]
    assert any(b1 < 130 and b1 % C for _, b1 in rev)               # a window starts mid-chunk
    KB.test_mamba3_backward_vs_torch(engine, 1, 130, 1, 32, 1, 128, 0.5, True, True, False, ckpt=C)
