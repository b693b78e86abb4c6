"""Mamba-3 (SISO) scan kernels (py_engine/ops/mamba3.py: sequence forward, one-token step) in headless
Chromium's WebGPU, against the float64 reference tests/reference/mamba3_numpy.py (scan_sequential;
itself checked against upstream in tests/unit/test_mamba3_reference.py).

Tolerance: max error <= 1e-4 of the reference's scale (max |.|) for y and each final state (the angle
state compared modulo 2 pi: it is an angle kept in [0, 2 pi)). Inputs are Cols views carved from one
wide in_proj-like matrix (and Bn/Cn from one normed [B | C] matrix) or plain tensors; the unrolled
step must equal the forward (outputs and states). Shapes are tiny (SwiftShader is a CPU) except one
case at the real head shape (N = 128, P = 64).
"""
import contextlib
import math

import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import mamba3_numpy as m3

pytestmark = pytest.mark.browser

gpu = runner()

TOL = 1e-4
A_FLOOR = 1e-4
rng = np.random.default_rng(3003)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def n_angles(N, rf):
    split = int(N * rf)
    return (split - split % 2) // 2


CASES = [  # nb, T, H, P, G, N, rope fraction, heavy tail, initial state, Cols views
    pytest.param(2, 1, 2, 4, 1, 8, 0.5, True, True, True, id="T1-G1-rf0.5-heavy"),
    pytest.param(2, 7, 4, 3, 2, 8, 1.0, False, True, True, id="T7-G2-rf1-softplus"),
    pytest.param(2, 9, 2, 5, 2, 12, 0.5, True, False, False, id="T9-G2-nostate-tensors"),
    pytest.param(2, 5, 2, 6, 1, 10, 1.0, True, True, False, id="T5-G1-rf1-tensors"),
    pytest.param(2, 3, 2, 64, 1, 128, 0.5, False, True, True, id="real-head-N128-P64"),
]
# more rows and states than the lanes step holds in registers a round (64 rows, 128 states:
# lib/mamba3_step_common.wgsl's MAXP / MAXJ), for the lanes step on lavapipe and a real GPU
LANES_ROUNDS_CASES = [
    pytest.param(1, 2, 2, 70, 1, 160, 0.5, True, True, True, id="rounds-P70-N160"),
    pytest.param(2, 2, 2, 66, 2, 136, 1.0, False, True, False, id="rounds-P66-N136-tensors"),
]

CODE = """
import types
import py_engine.ops.mamba3 as m3
nb, Tn, H, P, G, N, S = {nb}, {T}, {H}, {P}, {G}, {N}, {S}
HP, GN, WP = H * P, G * N, {WP}
cols, with_state = {cols}, {with_state}
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads=H,
          n_groups=G, S=S, A_floor={A_floor}, heavy_tail={heavy})
if cols:   # packed as a loaded model's are (nn/mamba3.decode_param_packs): the folded step reads them
    from py_engine.ops.weight_pack import pack_params
    pack_params(dev, [T['dt_bias'], T['B_bias'], T['C_bias'], T['D']])
# in_proj-like [z | x | B | C | dd_dt | dd_A | trap | angles] (B/C raw: unused), normed [Bn | Cn]
ox, odt = HP, 2 * HP + 2 * GN
off = dict(x=(ox, HP), dd_dt=(odt, H), dd_A=(odt + H, H), trap=(odt + 2 * H, H),
           angles=(odt + 3 * H, S))
flat = lambda t, w: Tensor(dev, (nb, Tn * w), buffer=t.buffer, offset=t.offset)
tok = lambda a, o, w: Cols(a, o, w, (nb, w))   # token t of every sequence: a [nb, Tn*w]
if cols:
    seq = {{k: Cols(T['proj'], o, w, (nb, Tn, w)) for k, (o, w) in off.items()}}
    seq['Bn'] = Cols(T['bc'], 0, GN, (nb, Tn, GN))
    seq['Cn'] = Cols(T['bc'], GN, GN, (nb, Tn, GN))
    pf, bf = flat(T['proj'], WP), flat(T['bc'], 2 * GN)
    def step_in(t):
        d = {{k: tok(pf, t * WP + o, w) for k, (o, w) in off.items()}}
        d['Bn'], d['Cn'] = tok(bf, t * 2 * GN, GN), tok(bf, t * 2 * GN + GN, GN)
        return d
else:
    names = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
    seq = {{k: T[k] for k in names}}
    step_in = lambda t: {{k: tok(flat(T[k], T[k].shape[-1]), t * T[k].shape[-1], T[k].shape[-1])
                         for k in names}}
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
def copy_state(src):
    st = types.SimpleNamespace()
    for n in ('angle', 'ssm', 'k', 'v'):
        t = Tensor(dev, src[n].shape)
        b.copy(src[n].buffer, src[n].offset, t.buffer, t.offset, t.nbytes)
        setattr(st, n, t)
    return st
init = {{n: T['s_' + n] for n in ('angle', 'ssm', 'k', 'v')}}
fst = copy_state(init) if with_state else None
sst = copy_state(init)    # the step's state (the test's init is zeros when with_state is False)
n0 = b.dispatch_count
y, saved = m3.mamba3_forward(b, *[seq[k] for k in order], state=fst, save=True, **kw)
info['fwd_dispatches'] = b.dispatch_count - n0
info['saved_init'] = saved.ssm0 is not None
info['pre_shape'] = list(saved.pre.shape)
b.submit()
y2, none = m3.mamba3_forward(b, *[seq[k] for k in order], state=None, **kw)
b.submit()
info['saved_none'] = none is None
info['same_nostate'] = (await y2.to_bytes() == await y.to_bytes()) if not with_state else None
ys = Tensor(dev, (nb, Tn, HP))
n0 = b.dispatch_count
d0 = step_in(0)
# the lanes step computes its own scalars when the four raw inputs share a buffer (Cols of proj)
info['step_folded'] = (m3.step_folds_prep(dev, False)
                       and m3.one_binding([d0[k] for k in ('dd_dt', 'dd_A', 'trap', 'angles')]) is not None
                       and m3.folded_params(kw['dt_bias'], kw['B_bias'], kw['C_bias'], kw['D']) is not None)
info['step_split'] = info['step_folded'] and m3.step_splits_for(dev, {H}, {P})   # head, rows: two
info['step_last'] = info['step_split'] and m3.step_last(dev)       # rows alone: one
for t in range(Tn):
    d = step_in(t)
    m3.mamba3_step(b, *[d[k] for k in order], sst, out=tok(flat(ys, HP), t * HP, HP), **kw)
info['step_dispatches'] = b.dispatch_count - n0
outs.update(y=y, ys=ys, pre=saved.pre)
if with_state:
    outs.update({{'f_' + n: getattr(fst, n) for n in ('angle', 'ssm', 'k', 'v')}})
    outs.update({{'i_ssm': saved.ssm0, 'i_k': saved.k0}})
outs.update({{'s_' + n: getattr(sst, n) for n in ('angle', 'ssm', 'k', 'v')}})
"""


def reference(d, nb, T, H, P, G, N, S, heavy, state):
    """Per sequence: the reference's preprocess from the raw columns, then scan_sequential."""
    head_group = np.arange(H) // (H // G)
    act = m3.heavy_tail if heavy else m3.softplus
    ys, sts = [], []
    for b in range(nb):
        dd_dt, dd_A = d64(d["dd_dt"][b]), d64(d["dd_A"][b])
        DT = m3.softplus(dd_dt + d64(d["dt_bias"]))
        A = np.minimum(-act(dd_A), -A_FLOOR)
        pre = dict(x=d64(d["x"][b]).reshape(T, H, P),
                   Bt=d64(d["Bn"][b]).reshape(T, G, N)[:, head_group] + d64(d["B_bias"]),
                   Ct=d64(d["Cn"][b]).reshape(T, G, N)[:, head_group] + d64(d["C_bias"]),
                   DT=DT, ADT=A * DT, lam=m3.sigmoid(d64(d["trap"][b])),
                   theta=np.tanh(d64(d["angles"][b])) * math.pi)
        y, st = m3.scan_sequential(pre, d64(d["D"]), {k: d64(v[b]) for k, v in state.items()})
        ys.append(y.reshape(T, H * P))
        sts.append(st)
    return np.stack(ys), {k: np.stack([s[k] for s in sts]) for k in sts[0]}


def angle_err(got, ref):
    diff = np.asarray(got).reshape(ref.shape) - ref
    diff = (diff + math.pi) % (2 * math.pi) - math.pi
    return np.abs(diff).max() / np.abs(ref).max()


def check_states(o, prefix, rst):
    assert angle_err(o[prefix + "angle"], rst["angle"]) <= TOL
    for n in ("ssm", "k", "v"):
        assert rel_err(o[prefix + n], rst[n]) <= TOL, n


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols", CASES)
def test_mamba3_forward_step_reference(engine, nb, T, H, P, G, N, rf, heavy, with_state, cols):
    check_forward_step(engine, nb, T, H, P, G, N, rf, heavy, with_state, cols)


def check_forward_step(engine, nb, T, H, P, G, N, rf, heavy, with_state, cols):
    """The forward and the unrolled steps against the float64 reference; returns the run's info."""
    S = n_angles(N, rf)
    HP, GN = H * P, G * N
    assert (2 * S < N) == (rf == 0.5)   # rf 0.5: dims >= 2S are unrotated
    WP = 2 * HP + 2 * GN + 3 * H + S
    proj = f32(nb * T, WP)
    odt = 2 * HP + 2 * GN
    proj[0, odt] = 25.0                          # softplus' linear branch (> 20)
    proj[-1, odt + H] = -2.0e4 if heavy else -12.0   # A_floor binds (f < A_floor)
    proj[0, odt + 3 * H] = 40.0                  # tanh saturates (the kernel clamps first)
    bc = f32(nb * T, 2 * GN)
    split = lambda a, o, w: a[:, o:o + w].reshape(nb, T, w)
    raw = dict(x=split(proj, HP, HP), dd_dt=split(proj, odt, H), dd_A=split(proj, odt + H, H),
               trap=split(proj, odt + 2 * H, H), angles=split(proj, odt + 3 * H, S),
               Bn=split(bc, 0, GN), Cn=split(bc, GN, GN))
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, N, scale=0.5), C_bias=f32(H, N, scale=0.5))
    if with_state:
        state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                     ssm=f32(nb, H, P, N), k=f32(nb, H, N), v=f32(nb, H, P))
    else:
        state = dict(angle=np.zeros((nb, H, S), np.float32), ssm=np.zeros((nb, H, P, N), np.float32),
                     k=np.zeros((nb, H, N), np.float32), v=np.zeros((nb, H, P), np.float32))
    d = dict(par, **{"s_" + k: v for k, v in state.items()})
    d.update(dict(proj=proj, bc=bc) if cols else raw)
    code = CODE.format(nb=nb, T=T, H=H, P=P, G=G, N=N, S=S, WP=WP, cols=cols,
                       with_state=with_state, A_floor=A_FLOOR, heavy=heavy)
    o, info = gpu(engine, code, **d)

    ry, rst = reference(dict(raw, **par), nb, T, H, P, G, N, S, heavy, state)
    assert info["fwd_dispatches"] == 2
    one = info["step_folded"] and (not info["step_split"] or info["step_last"])
    assert info["step_dispatches"] == (1 if one else 2) * T
    assert info["saved_init"] == with_state and info["saved_none"]
    assert info["pre_shape"] == [nb * T * (4 * H + S) + 2 * H * N + H]
    if not with_state:
        assert info["same_nostate"]   # state=None == explicit zeros, bit for bit
    # forward vs the float64 recurrence: outputs and (with a state) all four final states
    assert rel_err(o["y"], ry) <= TOL
    if with_state:
        check_states(o, "f_", rst)
        assert np.array_equal(o["i_ssm"], state["ssm"].ravel())   # saved: the initial state
        assert np.array_equal(o["i_k"], state["k"].ravel())
    # unrolled steps vs the reference, and vs the forward
    assert rel_err(o["ys"], ry) <= TOL
    check_states(o, "s_", rst)
    assert rel_err(o["ys"], o["y"].reshape(ry.shape), np.abs(ry).max()) <= TOL
    if with_state:
        for n in ("ssm", "k", "v"):
            assert rel_err(o["s_" + n], o["f_" + n].reshape(rst[n].shape),
                           np.abs(rst[n]).max()) <= TOL
        assert angle_err(o["s_angle"], o["f_angle"].reshape(rst["angle"].shape)) <= TOL
    assert np.isfinite(o["pre"]).all()   # saved pre: the clamped tanh and floored A stay finite
    return info


def test_mamba3_shape_errors(engine):
    """Bad shapes say which tensor is wrong; nothing is dispatched."""
    code = """
import py_engine.ops.mamba3 as m3
H, P, G, N, S = 2, 4, 1, 8, 2
x, Bn = Tensor(dev, (1, 3, H * P)), Tensor(dev, (1, 3, G * N))
sc, an = Tensor(dev, (1, 3, H)), Tensor(dev, (1, 3, S))
kw = dict(dt_bias=Tensor(dev, (H,)), B_bias=Tensor(dev, (H, N)), C_bias=Tensor(dev, (H, N)),
          D=Tensor(dev, (H,)), n_heads=H, n_groups=G, S=S, A_floor=1e-4)
errs = []
for args, extra in (((x, Bn, Bn, sc, sc, sc, Tensor(dev, (1, 3, 3))), {}),
                    ((x, Bn, Bn, sc, sc, sc, an), dict(S=5)),
                    ((x, Bn, Bn, Tensor(dev, (1, 4, H)), sc, sc, an), {}),
                    ((x, Bn, Bn, sc, sc, sc, an), dict(n_groups=3))):
    try:
        m3.mamba3_forward(b, *args, **dict(kw, **extra))
        errs.append(None)
    except ValueError as e:
        errs.append(str(e))
info['errs'] = errs
info['dispatches'] = b.dispatch_count
"""
    _, info = gpu(engine, code, dummy=np.zeros(1, np.float32))
    assert info["dispatches"] == 0
    ang, s_big, dt_len, groups = info["errs"]
    assert ang is not None and "angles has shape [1, 3, 3]" in ang
    assert s_big is not None and "S=5" in s_big
    assert dt_len is not None and "dd_dt has shape [1, 4, 2]" in dt_len
    assert groups is not None and "n_groups=3" in groups


# ---------------------------------------------------------------------------------------------------------
# the chunked form (mamba3_chunk_scan) == the sequential scan, and == the float64 reference

CHUNK_CODE = """
import types
import py_engine.ops.mamba3 as m3
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads={H},
          n_groups={G}, S={S}, A_floor={A_floor}, heavy_tail={heavy})
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
def copy_state():
    st = types.SimpleNamespace()
    for n in ('angle', 'ssm', 'k', 'v'):
        t = Tensor(dev, T['s_' + n].shape)
        b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
        setattr(st, n, t)
    return st
info['L'] = m3.forward_chunk_len(dev, {N}, {S})
info['default'] = m3.chunked_path(dev, T['x'].shape[1], T['x'].shape[2] // {H}, {N})
info['auto'] = None
for path in ('serial', 'chunked', 'parallel', None):
    st = copy_state()
    n0 = b.dispatch_count
    y, _ = m3.mamba3_forward(b, *[T[k] for k in order], state=st, path=path, **kw)
    outs.update({{f'{{path}}_y': y}}, **{{f'{{path}}_' + n: getattr(st, n) for n in ('angle', 'ssm', 'k', 'v')}})
"""

CHUNK_CASES = [  # nb, T, H, P, G, N, rope fraction, heavy tail
    pytest.param(2, 37, 2, 5, 2, 12, 1.0, True, id="T37-G2-rf1-heavy"),    # L 32: a 5-token last chunk
    pytest.param(1, 21, 2, 64, 1, 128, 0.5, False, id="T21-N128-P64"),     # the real head: L 8
]


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy", CHUNK_CASES)
def test_mamba3_chunked_equals_serial(engine, nb, T, H, P, G, N, rf, heavy):
    assert check_chunked(engine, nb, T, H, P, G, N, rf, heavy) in (8, 32)


def check_paths(o, info, ry, rst, nb, H, S):
    """Every path's y and final states against the float64 reference (ry, rst); the chunked
    forms (one head's chunks in order, or side by side) == the serial scan to 1e-5 of each
    output's scale (the issue's bar); the default (path None) is the form the rule picks."""
    for path in ("serial", "chunked", "parallel"):
        assert rel_err(o[f"{path}_y"], ry) <= TOL, path
        check_states(o, f"{path}_", rst)
    for path in ("chunked", "parallel"):
        assert rel_err(o[path + "_y"], o["serial_y"]) <= 1e-5, path
        for n in ("ssm", "k", "v"):
            assert rel_err(o[path + "_" + n], o["serial_" + n]) <= 1e-5, (path, n)
        assert angle_err(o[path + "_angle"], o["serial_angle"].reshape(nb, H, S)) <= 1e-5, path
    assert np.array_equal(o["None_y"], o[info["default"] + "_y"])


def check_chunked(engine, nb, T, H, P, G, N, rf, heavy):
    """The chunked forward == the serial one to 1e-5, both == the float64 reference, over
    several chunks with a short last one; returns the chunk length the device ran."""
    S = n_angles(N, rf)
    raw = dict(x=f32(nb, T, H * P), Bn=f32(nb, T, G * N), Cn=f32(nb, T, G * N), dd_dt=f32(nb, T, H),
               dd_A=f32(nb, T, H), trap=f32(nb, T, H), angles=f32(nb, T, S))
    raw["dd_A"][0, 3, 0] = -2.0e4 if heavy else -12.0    # A floor binds
    raw["dd_dt"][0, 4, 1] = 25.0                          # softplus' linear branch
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, N, scale=0.5), C_bias=f32(H, N, scale=0.5))
    state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                 ssm=f32(nb, H, P, N), k=f32(nb, H, N), v=f32(nb, H, P))
    code = CHUNK_CODE.format(H=H, G=G, N=N, S=S, A_floor=A_FLOOR, heavy=heavy)
    o, info = gpu(engine, code, **raw, **par, **{"s_" + k: v for k, v in state.items()})
    L = info["L"]
    assert T % L and T > L                                # several chunks, the last one short
    ry, rst = reference(dict(raw, **par), nb, T, H, P, G, N, S, heavy, state)
    check_paths(o, info, ry, rst, nb, H, S)
    return L


# ---------------------------------------------------------------------------------------------------------
# MIMO (rank R): the chunked form (intra-chunk (L R) x (L R) matrices, state passed between chunks)
# == the sequential scan to 1e-5, and both == the float64 scan_sequential_mimo

MIMO_CHUNK_CODE = """
import types
import py_engine.ops.mamba3 as m3
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads={H},
          n_groups={G}, S={S}, A_floor={A_floor}, heavy_tail={heavy}, mimo_x=T['mimo_x'])
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
def copy_state():
    st = types.SimpleNamespace()
    for n in ('angle', 'ssm', 'k', 'v'):
        t = Tensor(dev, T['s_' + n].shape)
        b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
        setattr(st, n, t)
    return st
info['L'] = m3.forward_chunk_len(dev, {N}, {S}, {R})
info['default'] = m3.chunked_path(dev, T['x'].shape[1], T['x'].shape[2] // {H}, {N})
info['dispatches'] = {{}}
for path in ('serial', 'chunked', 'parallel', None):
    st = copy_state()
    n0 = b.dispatch_count
    y, _ = m3.mamba3_forward(b, *[T[k] for k in order], state=st, path=path, **kw)
    info['dispatches'][str(path)] = b.dispatch_count - n0
    outs.update({{f'{{path}}_y': y}}, **{{f'{{path}}_' + n: getattr(st, n) for n in ('angle', 'ssm', 'k', 'v')}})
"""


def mimo_inputs(nb, T, H, P, G, N, R, S, heavy):
    raw = dict(x=f32(nb, T, H * P), Bn=f32(nb, T, R * G * N), Cn=f32(nb, T, R * G * N),
               dd_dt=f32(nb, T, H), dd_A=f32(nb, T, H), trap=f32(nb, T, H), angles=f32(nb, T, S))
    raw["dd_A"][0, 3, 0] = -2.0e4 if heavy else -12.0    # A floor binds
    raw["dd_dt"][0, 4, -1] = 25.0                         # softplus' linear branch
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, R, N, scale=0.5), C_bias=f32(H, R, N, scale=0.5),
               mimo_x=f32(H, R, P, scale=0.5))
    state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                 ssm=f32(nb, H, P, N), k=f32(nb, R, H, N), v=f32(nb, H, P))
    return raw, par, state


def reference_mimo(d, state, nb, T, H, P, G, N, R, heavy):
    """Per sequence: the reference's preprocess, then scan_sequential_mimo -> y [nb, T, R*H*P]
    (rank-major rows, as the kernel writes them), final states stacked over the batch."""
    hg = np.arange(H) // (H // G)
    act = m3.heavy_tail if heavy else m3.softplus
    ys, sts = [], []
    for b in range(nb):
        DT = m3.softplus(d64(d["dd_dt"][b]) + d64(d["dt_bias"]))
        A = np.minimum(-act(d64(d["dd_A"][b])), -A_FLOOR)
        bias = lambda a: d64(a).transpose(1, 0, 2)                       # noqa: E731  [R, H, N]
        pre = dict(x=d64(d["x"][b]).reshape(T, H, P),
                   Bt=d64(d["Bn"][b]).reshape(T, R, G, N)[:, :, hg] + bias(d["B_bias"]),
                   Ct=d64(d["Cn"][b]).reshape(T, R, G, N)[:, :, hg] + bias(d["C_bias"]),
                   DT=DT, ADT=A * DT, lam=m3.sigmoid(d64(d["trap"][b])),
                   theta=np.tanh(np.clip(d64(d["angles"][b]), -10, 10)) * math.pi)
        y, st = m3.scan_sequential_mimo(pre, dict(D=d64(d["D"]), mimo_x=d64(d["mimo_x"])),
                                        {k: d64(v[b]) for k, v in state.items()})
        ys.append(y.reshape(T, R * H * P))
        sts.append(st)
    return np.stack(ys), {k: np.stack([s[k] for s in sts]) for k in sts[0]}


MIMO_CHUNK_CASES = [  # nb, T, H, P, G, N, R, rope fraction, heavy tail
    pytest.param(2, 37, 2, 5, 2, 12, 2, 1.0, True, id="R2-T37-G2-rf1-heavy"),   # L 16: a 5-token last chunk
    pytest.param(1, 23, 4, 3, 1, 8, 3, 0.5, False, id="R3-T23-softplus"),       # L 8 (L R 24)
    pytest.param(1, 19, 2, 64, 1, 128, 4, 0.5, True, id="R4-T19-N128-P64"),     # the real head: L 2
]


@pytest.mark.parametrize("nb,T,H,P,G,N,R,rf,heavy", MIMO_CHUNK_CASES)
def test_mamba3_mimo_chunked_equals_serial(engine, nb, T, H, P, G, N, R, rf, heavy):
    S = n_angles(N, rf)
    raw, par, state = mimo_inputs(nb, T, H, P, G, N, R, S, heavy)
    code = MIMO_CHUNK_CODE.format(H=H, G=G, N=N, S=S, R=R, A_floor=A_FLOOR, heavy=heavy)
    o, info = gpu(engine, code, **raw, **par, **{"s_" + k: v for k, v in state.items()})
    L = info["L"]
    assert L >= 2 and T % L and T > L                      # several chunks, the last one short
    ry, rst = reference_mimo(dict(raw, **par), state, nb, T, H, P, G, N, R, heavy)
    # picked by length: T >= CHUNK_MIN_T runs a chunked form (prep + copy of mimo_x + scans)
    check_paths(o, info, ry, rst, nb, H, S)
    assert info["dispatches"]["None"] == info["dispatches"][info["default"]]


# ---------------------------------------------------------------------------------------------------------
# The register-tiled delta and out kernels (shaders/mamba3_chunk_tiles.wgsl, ops/mamba3_tiles.py;
# off by rule until timed on a GPU): path "parallel" with them on == serial to 1e-5 == float64,
# here through the browser's own WGSL compiler (tests/unit/test_mamba3_tiles_native.py has more)

TILES_ON = """
import py_engine.ops.mamba3 as m3
device.mamba3_tiles = True
device.mamba3_chunk = {chunk}
device.mamba3_block = {block}
m3._tile_runs = []
m3._untiled_forward_parallel = m3._forward_parallel
def _recorded(*a, **k):
    m3._tile_runs.append(bool(a[11] if len(a) > 11 else k.get('tiled')))
    return m3._untiled_forward_parallel(*a, **k)
m3._forward_parallel = _recorded
result = None
"""
TILES_OFF = """
import py_engine.ops.mamba3 as m3
for name in ('mamba3_tiles', 'mamba3_chunk', 'mamba3_block'):
    setattr(device, name, None)
m3._forward_parallel = m3._untiled_forward_parallel
result = m3._tile_runs
"""


@contextlib.contextmanager
def tiled(engine, chunk, block=None):
    """Path "parallel" runs the tiled kernels at `chunk` tokens (both chunked forms do: the chunk
    length is one setting), K's and the out kernel's operands in blocks of at most `block`; on
    leaving, every side-by-side forward inside ran them (not the thread-per-row kernels)."""
    engine.run(TILES_ON.format(chunk=chunk, block=block))
    try:
        yield engine
    finally:
        runs = engine.run(TILES_OFF)
    assert runs and all(runs), runs


TILE_CASES = [  # chunk, block, then check_chunked's or the MIMO test's arguments
    pytest.param(8, 1, (2, 37, 2, 5, 2, 12, 1.0, True), id="siso-T37-G2-blocks1"),
    pytest.param(8, None, (1, 23, 4, 3, 1, 8, 3, 0.5, False), id="mimo-R3-T23"),
]


@pytest.mark.parametrize("chunk,block,args", TILE_CASES)
def test_mamba3_tiled_chunks_equal_serial(engine, chunk, block, args):
    with tiled(engine, chunk, block):
        if len(args) == 8:
            check_chunked(engine, *args)
        else:
            test_mamba3_mimo_chunked_equals_serial(engine, *args)
