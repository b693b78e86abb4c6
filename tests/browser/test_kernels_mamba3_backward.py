"""Mamba-3 (SISO) scan backward (py_engine/ops/mamba3_backward.py) in headless Chromium's WebGPU, against
torch float64 autograd of a torch re-implementation of the scan (written here from the reference's math;
first checked against tests/reference/mamba3_numpy.py's scan_sequential outputs to 1e-12).

Tolerance: max error <= 1e-4 of each gradient's scale (max |.| of the torch gradient), every gradient.
Cases cover G = 1 and 2, rope fraction 0.5 and 1.0, both A activations, Bsz = 2, T = 1 and 9, with and
without an initial state, Cols views for inputs and the token gradients, the A floor binding for some
entries (its gradient must be 0 there), softplus' linear branch and a saturated (clamped) angle, and
one N = 64 / P = 32 case.
"""
import math

import numpy as np
import pytest
import torch

from py_engine.ops.mamba3_backward import _scan_windows, ckpt_len
from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import mamba3_numpy as m3

pytestmark = pytest.mark.browser

gpu = runner()

TOL = 1e-4
A_FLOOR = 1e-4
rng = np.random.default_rng(3313)


def _reseed(*case):
    """Each case draws its inputs from a generator seeded by the case itself, so it sees the
    same numbers whatever ran before it (tests/unit/*_native.py run these in another order)."""
    global rng
    rng = np.random.default_rng([3313] + [int(v) if isinstance(v, (bool, int)) else len(str(v))
                                          for v in case])
GRADS = ("dx", "dBn", "dCn", "ddd_dt", "ddd_A", "dtrap", "dangles", "ddt_bias", "dB_bias",
         "dC_bias", "dD")


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def n_angles(N, rf):
    split = int(N * rf)
    return (split - split % 2) // 2


def rot(v, phi):
    """torch version of the reference's rotate: pairs (2i, 2i+1), i < S, by phi_i."""
    S = phi.shape[-1]
    a, b = v[..., 0:2 * S:2], v[..., 1:2 * S:2]
    c, s = torch.cos(phi), torch.sin(phi)
    r = torch.stack([a * c - b * s, a * s + b * c], -1).reshape(*v.shape[:-1], 2 * S)
    return torch.cat([r, v[..., 2 * S:]], -1)


def torch_scan(inp, state, H, G, heavy):
    """inp: float64 torch tensors x [nb,T,H*P], Bn/Cn [nb,T,G*N], dd_dt/dd_A/trap [nb,T,H],
    angles [nb,T,S], dt_bias [H], B_bias/C_bias [H,N], D [H]; state: dict of float64 tensors
    (angle [nb,H,S], ssm [nb,H,P,N], k [nb,H,N], v [nb,H,P]). -> y [nb, T, H*P]."""
    nb, T, HP = inp["x"].shape
    P = HP // H
    N = inp["Bn"].shape[-1] // G
    x = inp["x"].reshape(nb, T, H, P)
    hg = torch.arange(H) // (H // G)
    Bt = inp["Bn"].reshape(nb, T, G, N)[:, :, hg] + inp["B_bias"]
    Ct = inp["Cn"].reshape(nb, T, G, N)[:, :, hg] + inp["C_bias"]
    DT = torch.nn.functional.softplus(inp["dd_dt"] + inp["dt_bias"])
    a = inp["dd_A"]
    if heavy:
        f = torch.clamp(a, min=0.0) + 1.0 / (1.0 - torch.clamp(a, max=0.0))
    else:
        f = torch.nn.functional.softplus(a)
    A = torch.minimum(-f, torch.full_like(f, -A_FLOOR))
    lam = torch.sigmoid(inp["trap"])
    alpha = torch.exp(A * DT)
    beta = (1.0 - lam) * DT * alpha
    gamma = lam * DT
    theta = torch.tanh(torch.clamp(inp["angles"], -10.0, 10.0)) * math.pi
    phi, Sm, kp, vp = state["angle"], state["ssm"], state["k"], state["v"]
    ys = []
    for t in range(T):
        phi = phi + theta[:, t, None, :] * DT[:, t, :, None]
        phi = phi - 2 * math.pi * torch.floor(phi / (2 * math.pi))
        k, q, v = rot(Bt[:, t], phi), rot(Ct[:, t], phi), x[:, t]
        Sm = (alpha[:, t, :, None, None] * Sm + beta[:, t, :, None, None] * vp[..., None] * kp[:, :, None]
              + gamma[:, t, :, None, None] * v[..., None] * k[:, :, None])
        ys.append(torch.einsum("bhpn,bhn->bhp", Sm, q) + inp["D"][:, None] * v)
        kp, vp = k, v
    return torch.stack(ys, 1).reshape(nb, T, HP)


def numpy_scan(raw, state, H, G, heavy):
    """The reference's scan_sequential, per sequence (the same preprocessing as the forward test)."""
    nb, T, HP = raw["x"].shape
    P, N = HP // H, raw["Bn"].shape[-1] // G
    hg = np.arange(H) // (H // G)
    act = m3.heavy_tail if heavy else m3.softplus
    ys = []
    for b in range(nb):
        DT = m3.softplus(d64(raw["dd_dt"][b]) + d64(raw["dt_bias"]))
        A = np.minimum(-act(d64(raw["dd_A"][b])), -A_FLOOR)
        pre = dict(x=d64(raw["x"][b]).reshape(T, H, P),
                   Bt=d64(raw["Bn"][b]).reshape(T, G, N)[:, hg] + d64(raw["B_bias"]),
                   Ct=d64(raw["Cn"][b]).reshape(T, G, N)[:, hg] + d64(raw["C_bias"]),
                   DT=DT, ADT=A * DT, lam=m3.sigmoid(d64(raw["trap"][b])),
                   theta=np.tanh(np.clip(d64(raw["angles"][b]), -10, 10)) * math.pi)
        y, _ = m3.scan_sequential(pre, d64(raw["D"]), {k: d64(v[b]) for k, v in state.items()})
        ys.append(y.reshape(T, HP))
    return np.stack(ys)


CODE = """
import types
import py_engine.ops.mamba3 as m3
from py_engine.ops.mamba3_backward import mamba3_backward
nb, Tn, H, P, G, N, S = {nb}, {T}, {H}, {P}, {G}, {N}, {S}
HP, GN, WP = H * P, G * N, {WP}
cols, with_state = {cols}, {with_state}
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads=H,
          n_groups=G, S=S, A_floor={A_floor}, heavy_tail={heavy})
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
if cols:   # in_proj-like [x | dd_dt | dd_A | trap | angles], normed [Bn | Cn]; gradients likewise
    odt = HP
    off = dict(x=(0, HP), dd_dt=(odt, H), dd_A=(odt + H, H), trap=(odt + 2 * H, H),
               angles=(odt + 3 * H, S))
    seq = {{k: Cols(T['proj'], o, w, (nb, Tn, w)) for k, (o, w) in off.items()}}
    seq['Bn'] = Cols(T['bc'], 0, GN, (nb, Tn, GN))
    seq['Cn'] = Cols(T['bc'], GN, GN, (nb, Tn, GN))
    gp, gbc = Tensor(dev, (nb, Tn, WP)), Tensor(dev, (nb, Tn, 2 * GN))
    gname = dict(x='dx', dd_dt='ddd_dt', dd_A='ddd_A', trap='dtrap', angles='dangles')
    grads = {{gname[k]: Cols(gp, o, w, (nb, Tn, w)) for k, (o, w) in off.items()}}
    grads['dBn'] = Cols(gbc, 0, GN, (nb, Tn, GN))
    grads['dCn'] = Cols(gbc, GN, GN, (nb, Tn, GN))
    outs.update(gp=gp, gbc=gbc)
else:
    seq = {{k: T[k] for k in order}}
    grads = None
st = None
if with_state:
    st = types.SimpleNamespace()
    for n in ('angle', 'ssm', 'k', 'v'):
        t = Tensor(dev, T['s_' + n].shape)
        b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
        setattr(st, n, t)
y, saved = m3.mamba3_forward(b, *[seq[k] for k in order], state=st, save=True, **kw)
n0 = b.dispatch_count
g = mamba3_backward(b, T['dy'], *[seq[k] for k in order], saved, grads=grads, ckpt={ckpt}, **kw)
info['bwd_dispatches'] = b.dispatch_count - n0
info['cols_used'] = all(g[k] is grads[k] for k in grads) if cols else None
outs['y'] = y
if not cols:
    outs.update({{k: g[k] for k in g}})
else:
    outs.update({{k: g[k] for k in ('ddt_bias', 'dB_bias', 'dC_bias', 'dD')}})
"""

CASES = [  # nb, T, H, P, G, N, rope fraction, heavy tail, initial state, Cols views
    pytest.param(2, 1, 2, 4, 1, 8, 0.5, True, True, False, id="T1-G1-rf0.5-heavy"),
    pytest.param(2, 1, 2, 3, 2, 8, 1.0, False, False, True, id="T1-G2-rf1-softplus-cols"),
    pytest.param(2, 9, 4, 3, 2, 8, 1.0, False, True, True, id="T9-G2-rf1-softplus-cols"),
    pytest.param(2, 9, 2, 5, 1, 12, 0.5, True, False, False, id="T9-G1-rf0.5-heavy-nostate"),
    pytest.param(2, 9, 4, 4, 2, 10, 0.5, True, True, False, id="T9-G2-rf0.5-heavy"),
    pytest.param(2, 9, 2, 3, 1, 8, 1.0, False, True, False, id="T9-G1-rf1-softplus"),
    pytest.param(2, 4, 2, 32, 1, 64, 0.5, True, True, True, id="N64-P32"),
]


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols", CASES)
def test_mamba3_backward_vs_torch(engine, nb, T, H, P, G, N, rf, heavy, with_state, cols, ckpt=None):
    """ckpt: the backward's checkpoint interval (None: its default, ceil(sqrt(T)): 3 at T 9)."""
    _reseed(nb, T, H, P, G, N, heavy, with_state, cols)
    S = n_angles(N, rf)
    HP, GN = H * P, G * N
    WP = HP + 3 * H + S
    proj = f32(nb * T, WP)
    proj[:, HP + H:HP + 2 * H] *= 1.5
    # the A floor binds for some entries (f(dd_A) < A_floor): their ddd_A must be exactly 0
    floor_val = -2.0e4 if heavy else -12.0
    proj[0, HP + H] = floor_val
    proj[-1, HP + 2 * H - 1] = floor_val
    proj[-1, HP] = 21.0          # softplus' linear branch (> 20) for DT
    proj[0, HP + 3 * H] = 40.0    # tanh saturates: clamped, zero gradient
    bc = f32(nb * T, 2 * GN)
    split = lambda a, o, w: a[:, o:o + w].reshape(nb, T, w)
    raw = dict(x=split(proj, 0, HP), dd_dt=split(proj, HP, H), dd_A=split(proj, HP + H, H),
               trap=split(proj, HP + 2 * H, H), angles=split(proj, HP + 3 * H, S),
               Bn=split(bc, 0, GN), Cn=split(bc, GN, GN))
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, N, scale=0.5), C_bias=f32(H, N, scale=0.5))
    if with_state:
        state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32),
                     ssm=f32(nb, H, P, N), k=f32(nb, H, N), v=f32(nb, H, P))
    else:
        state = dict(angle=np.zeros((nb, H, S), np.float32), ssm=np.zeros((nb, H, P, N), np.float32),
                     k=np.zeros((nb, H, N), np.float32), v=np.zeros((nb, H, P), np.float32))
    dy = f32(nb, T, HP)

    # torch float64 re-implementation: outputs vs the numpy reference, then autograd
    inp = {k: torch.tensor(d64(v), requires_grad=True) for k, v in dict(raw, **par).items()}
    tst = {k: torch.tensor(d64(v)) for k, v in state.items()}
    ty = torch_scan(inp, tst, H, G, heavy)
    ny = numpy_scan(dict(raw, **par), state, H, G, heavy)
    assert np.abs(ty.detach().numpy() - ny).max() <= 1e-12 * max(1.0, np.abs(ny).max())
    (ty * torch.tensor(d64(dy))).sum().backward()
    names = dict(dx="x", dBn="Bn", dCn="Cn", ddd_dt="dd_dt", ddd_A="dd_A", dtrap="trap",
                 dangles="angles", ddt_bias="dt_bias", dB_bias="B_bias", dC_bias="C_bias", dD="D")
    ref = {g: inp[n].grad.numpy() for g, n in names.items()}
    assert (ref["ddd_A"].reshape(-1, H)[0, 0] == 0.0) and (ref["ddd_A"].reshape(-1, H)[-1, H - 1] == 0.0)

    d = dict(par, dy=dy, **{"s_" + k: v for k, v in state.items()})
    d.update(dict(proj=proj, bc=bc) if cols else raw)
    code = CODE.format(nb=nb, T=T, H=H, P=P, G=G, N=N, S=S, WP=WP, cols=cols,
                       with_state=with_state, A_floor=A_FLOOR, heavy=heavy, ckpt=ckpt)
    o, info = gpu(engine, code, **d)
    windows = _scan_windows(T, N, P, S, 1, min(ckpt or ckpt_len(T, N, P, S), T))
    assert info["bwd_dispatches"] == 8 + len(windows)   # 9 unless T is long
    assert rel_err(o["y"], ny) <= TOL   # the forward this backward differentiates
    if cols:
        assert info["cols_used"]
        gp, gbc = o["gp"].reshape(nb * T, WP), o["gbc"].reshape(nb * T, 2 * GN)
        o.update(dx=gp[:, :HP], ddd_dt=gp[:, HP:HP + H], ddd_A=gp[:, HP + H:HP + 2 * H],
                 dtrap=gp[:, HP + 2 * H:HP + 3 * H], dangles=gp[:, HP + 3 * H:],
                 dBn=gbc[:, :GN], dCn=gbc[:, GN:])
    errs = {}
    for gname in GRADS:
        got = np.asarray(o[gname]).reshape(ref[gname].shape)
        assert np.isfinite(got).all(), gname
        scale = np.abs(ref[gname]).max()
        if gname == "dangles":   # T = 1 from a zero state: q.k is rotation invariant, dangles == 0
            scale = max(scale, np.abs(ref["dBn"]).max())   # then: absolute, at dBn's scale
        errs[gname] = rel_err(got, ref[gname], scale)
    bad = {k: e for k, e in errs.items() if not e <= TOL}
    assert not bad, f"gradients over tolerance: {bad} (all: {errs})"
    # exact zeros where the floor binds / the angle is clamped
    gA = np.asarray(o["ddd_A"]).reshape(-1, H)
    assert gA[0, 0] == 0.0 and gA[-1, H - 1] == 0.0
    assert np.asarray(o["dangles"]).reshape(-1, S)[0, 0] == 0.0


CKPT_CASES = [  # T 9: one state per chunk, a 1-token last chunk, one chunk holding every token
    pytest.param(1, id="ckpt1"), pytest.param(4, id="ckpt4"), pytest.param(9, id="ckpt9"),
]


@pytest.mark.parametrize("ckpt", CKPT_CASES)
def test_mamba3_backward_checkpoint_intervals(engine, ckpt):
    """The chunk-checkpointed backward (states recomputed per chunk from its entry checkpoint) ==
    torch float64 autograd whatever the interval: the same case at C 1, 4 and 9 (the default at
    T 9 is 3, the other cases)."""
    test_mamba3_backward_vs_torch(engine, 2, 9, 2, 3, 2, 8, 0.5, True, True, False, ckpt=ckpt)


# ---------------------------------------------------------------------------------------------------------
# MIMO (rank R): the same backward with mimo_x, half-split rotation pairs, a k state per rank

def rot_half(v, phi):
    """torch version of the reference's rotate_half: pairs (i, i + N/2), i < S, by phi_i."""
    S, hN = phi.shape[-1], v.shape[-1] // 2
    a, b = v[..., 0:S], v[..., hN:hN + S]
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.cat([a * c - b * s, v[..., S:hN], a * s + b * c, v[..., hN + S:]], -1)


def torch_scan_mimo(inp, state, H, G, R, heavy):
    """As torch_scan with Bn/Cn [nb,T,R*G*N] (rows (r g n)), B_bias/C_bias [H,R,N], mimo_x [H,R,P],
    state k [nb,R,H,N]. -> y [nb, T, R*H*P] (rank-major per row)."""
    nb, T, HP = inp["x"].shape
    P = HP // H
    N = inp["Bn"].shape[-1] // (G * R)
    x = inp["x"].reshape(nb, T, H, P)
    hg = torch.arange(H) // (H // G)
    bias = lambda t: t.transpose(0, 1)                                      # noqa: E731  [R, H, N]
    Bt = inp["Bn"].reshape(nb, T, R, G, N)[:, :, :, hg] + bias(inp["B_bias"])
    Ct = inp["Cn"].reshape(nb, T, R, G, N)[:, :, :, hg] + bias(inp["C_bias"])
    DT = torch.nn.functional.softplus(inp["dd_dt"] + inp["dt_bias"])
    a = inp["dd_A"]
    f = (torch.clamp(a, min=0.0) + 1.0 / (1.0 - torch.clamp(a, max=0.0)) if heavy
         else torch.nn.functional.softplus(a))
    A = torch.minimum(-f, torch.full_like(f, -A_FLOOR))
    lam = torch.sigmoid(inp["trap"])
    alpha, gamma = torch.exp(A * DT), lam * DT
    beta = (1.0 - lam) * DT * alpha
    theta = torch.tanh(torch.clamp(inp["angles"], -10.0, 10.0)) * math.pi
    mx = inp["mimo_x"].transpose(0, 1)                                      # [R, H, P]
    phi, Sm, kp = state["angle"], state["ssm"], state["k"]
    vp = state["v"][:, None] * mx
    ys = []
    for t in range(T):
        phi = phi + theta[:, t, None, :] * DT[:, t, :, None]
        phi = phi - 2 * math.pi * torch.floor(phi / (2 * math.pi))
        k, q = rot_half(Bt[:, t], phi[:, None]), rot_half(Ct[:, t], phi[:, None])   # [nb, R, H, N]
        v = x[:, t, None] * mx                                                     # [nb, R, H, P]
        Sm = (alpha[:, t, :, None, None] * Sm
              + beta[:, t, :, None, None] * torch.einsum("brhp,brhn->bhpn", vp, kp)
              + gamma[:, t, :, None, None] * torch.einsum("brhp,brhn->bhpn", v, k))
        ys.append(torch.einsum("bhpn,brhn->brhp", Sm, q) + inp["D"][:, None] * v)
        kp, vp = k, v
    return torch.stack(ys, 1).reshape(nb, T, R * HP)


def numpy_scan_mimo(raw, state, H, G, R, heavy):
    """The reference's scan_sequential_mimo, per sequence."""
    nb, T, HP = raw["x"].shape
    P, N = HP // H, raw["Bn"].shape[-1] // (G * R)
    hg = np.arange(H) // (H // G)
    act = m3.heavy_tail if heavy else m3.softplus
    ys = []
    for b in range(nb):
        DT = m3.softplus(d64(raw["dd_dt"][b]) + d64(raw["dt_bias"]))
        A = np.minimum(-act(d64(raw["dd_A"][b])), -A_FLOOR)
        pre = dict(x=d64(raw["x"][b]).reshape(T, H, P),
                   Bt=d64(raw["Bn"][b]).reshape(T, R, G, N)[:, :, hg] + d64(raw["B_bias"]).transpose(1, 0, 2),
                   Ct=d64(raw["Cn"][b]).reshape(T, R, G, N)[:, :, hg] + d64(raw["C_bias"]).transpose(1, 0, 2),
                   DT=DT, ADT=A * DT, lam=m3.sigmoid(d64(raw["trap"][b])),
                   theta=np.tanh(np.clip(d64(raw["angles"][b]), -10, 10)) * math.pi)
        y, _ = m3.scan_sequential_mimo(pre, dict(D=d64(raw["D"]), mimo_x=d64(raw["mimo_x"])),
                                       {k: d64(v[b]) for k, v in state.items()})
        ys.append(y.reshape(T, R * HP))
    return np.stack(ys)


MIMO_CODE = """
import types
import py_engine.ops.mamba3 as m3
from py_engine.ops.mamba3_backward import mamba3_backward
kw = dict(dt_bias=T['dt_bias'], B_bias=T['B_bias'], C_bias=T['C_bias'], D=T['D'], n_heads={H},
          n_groups={G}, S={S}, A_floor={A_floor}, heavy_tail={heavy}, mimo_x=T['mimo_x'])
order = ('x', 'Bn', 'Cn', 'dd_dt', 'dd_A', 'trap', 'angles')
st = None
if {with_state}:
    st = types.SimpleNamespace()
    for n in ('angle', 'ssm', 'k', 'v'):
        t = Tensor(dev, T['s_' + n].shape)
        b.copy(T['s_' + n].buffer, T['s_' + n].offset, t.buffer, t.offset, t.nbytes)
        setattr(st, n, t)
y, saved = m3.mamba3_forward(b, *[T[k] for k in order], state=st, save=True, **kw)
g = mamba3_backward(b, T['dy'], *[T[k] for k in order], saved, ckpt={ckpt}, **kw)
outs['y'] = y
outs.update(g)
"""

MIMO_CASES = [  # nb, T, H, P, G, N, R, rope fraction, heavy tail, initial state, checkpoint interval
    pytest.param(2, 9, 2, 3, 1, 8, 2, 0.5, True, True, None, id="R2-G1-rf0.5-heavy"),
    pytest.param(2, 7, 4, 3, 2, 12, 3, 1.0, False, True, 2, id="R3-G2-rf1-softplus-ckpt2"),
    pytest.param(1, 5, 2, 4, 1, 8, 4, 0.5, True, False, None, id="R4-nostate"),
]


@pytest.mark.parametrize("nb,T,H,P,G,N,R,rf,heavy,with_state,ckpt", MIMO_CASES)
def test_mamba3_mimo_backward_vs_torch(engine, nb, T, H, P, G, N, R, rf, heavy, with_state, ckpt):
    _reseed(nb, T, H, P, G, N, R, heavy, with_state)
    S = n_angles(N, rf)
    HP, RGN = H * P, R * G * N
    raw = dict(x=f32(nb, T, HP), dd_dt=f32(nb, T, H), dd_A=f32(nb, T, H, scale=1.5), trap=f32(nb, T, H),
               angles=f32(nb, T, S), Bn=f32(nb, T, RGN), Cn=f32(nb, T, RGN))
    raw["dd_A"][0, 0, 0] = -2.0e4 if heavy else -12.0      # the A floor binds: ddd_A exactly 0
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=f32(H, R, N, scale=0.5), C_bias=f32(H, R, N, scale=0.5),
               mimo_x=f32(H, R, P, scale=0.7))
    zeros = not with_state
    state = dict(angle=rng.uniform(0, 2 * np.pi, (nb, H, S)).astype(np.float32) * (not zeros),
                 ssm=f32(nb, H, P, N) * (not zeros), k=f32(nb, R, H, N) * (not zeros),
                 v=f32(nb, H, P) * (not zeros))
    dy = f32(nb, T, R * HP)
    inp = {k: torch.tensor(d64(v), requires_grad=True) for k, v in dict(raw, **par).items()}
    tst = {k: torch.tensor(d64(v)) for k, v in state.items()}
    ty = torch_scan_mimo(inp, tst, H, G, R, heavy)
    ny = numpy_scan_mimo(dict(raw, **par), state, H, G, R, heavy)
    assert np.abs(ty.detach().numpy() - ny).max() <= 1e-12 * max(1.0, np.abs(ny).max())
    (ty * torch.tensor(d64(dy))).sum().backward()
    names = dict(dx="x", dBn="Bn", dCn="Cn", ddd_dt="dd_dt", ddd_A="dd_A", dtrap="trap",
                 dangles="angles", ddt_bias="dt_bias", dB_bias="B_bias", dC_bias="C_bias", dD="D",
                 dmimo_x="mimo_x")
    ref = {g: inp[n].grad.numpy() for g, n in names.items()}
    d = dict(raw, **par, dy=dy, **{"s_" + k: v for k, v in state.items()})
    code = MIMO_CODE.format(H=H, G=G, S=S, A_floor=A_FLOOR, heavy=heavy, with_state=with_state,
                            ckpt=ckpt)
    o, _ = gpu(engine, code, **d)
    assert rel_err(o["y"], ny) <= TOL
    errs = {k: rel_err(np.asarray(o[k]).reshape(r.shape), r) for k, r in ref.items()}
    bad = {k: e for k, e in errs.items() if not e <= TOL}
    assert not bad, f"gradients over tolerance: {bad} (all: {errs})"
    assert np.asarray(o["ddd_A"]).reshape(nb, T, H)[0, 0, 0] == 0.0
    assert all(np.abs(r).max() > 1e-6 for r in ref.values())     # every gradient flows


# ---------------------------------------------------------------------------------------------------------
# the MIMO output (per-rank gate, optional head-wise norm, mimo_o), backward

OUT_CODE = """
from py_engine.ops.mamba3_mimo import mamba3_mimo_out, mamba3_mimo_out_backward
nw = T['norm_w'] if {onorm} else None
zc = Cols(T['zbuf'], 3, {HP}, ({rows}, {HP}))      # z as a column window, as in in_proj's output
o = mamba3_mimo_out(b, T['y'], zc, T['mimo_z'], T['mimo_o'], nw, 1e-5)
g = mamba3_mimo_out_backward(b, T['dout'], T['y'], zc, T['mimo_z'], T['mimo_o'], nw, 1e-5)
outs['out'] = o
outs.update({{k: v for k, v in g.items() if v is not None}})
"""


@pytest.mark.parametrize("onorm", [False, True], ids=["gate", "onorm"])
def test_mamba3_mimo_out_backward_vs_torch(engine, onorm):
    rows, H, R, P = 7, 3, 3, 5
    HP = H * P
    y = f32(rows, R * HP)
    zbuf = f32(rows, HP + 5)
    par = dict(mimo_z=1 + f32(H, R, P, scale=0.5), mimo_o=f32(H, R, P, scale=0.5),
               norm_w=1 + f32(HP, scale=0.3))
    dout = f32(rows, HP)
    t = {k: torch.tensor(d64(v), requires_grad=True) for k, v in dict(par, y=y).items()}
    z = torch.tensor(d64(zbuf[:, 3:3 + HP]), requires_grad=True)
    yr = t["y"].reshape(rows, R, H, P)
    if onorm:
        yr = yr * torch.rsqrt(yr.pow(2).mean(-1, keepdim=True) + 1e-5) * t["norm_w"].reshape(H, P)
    zr = z.reshape(rows, 1, H, P) * t["mimo_z"].transpose(0, 1)
    out = (yr * torch.nn.functional.silu(zr) * t["mimo_o"].transpose(0, 1)).sum(1).reshape(rows, HP)
    (out * torch.tensor(d64(dout))).sum().backward()
    ref = dict(out=out.detach().numpy(), dy=t["y"].grad.numpy(), dz=z.grad.numpy(),
               dmimo_z=t["mimo_z"].grad.numpy(), dmimo_o=t["mimo_o"].grad.numpy())
    if onorm:
        ref["dnorm_w"] = t["norm_w"].grad.numpy()
    o, _ = gpu(engine, OUT_CODE.format(onorm=onorm, HP=HP, rows=rows), y=y, zbuf=zbuf, dout=dout, **par)
    assert ("dnorm_w" in o) == onorm
    errs = {k: rel_err(o[k], r) for k, r in ref.items()}
    assert all(e <= TOL for e in errs.values()), errs
