"""Mamba-2 SSD scan backward (py_engine/ops/ssd_backward.py) in headless Chromium's WebGPU, against
float64 torch autograd through a plain sequential recurrence (built here, independent of the
forward kernel), plus central differences of a float64 numpy forward for dA_log and dt_bias.

Tolerance: every gradient within 1e-4 of its scale (max |reference|). Shapes are tiny (SwiftShader
is a CPU) except one case at the real N = 128, P = 64.
"""
import zlib

import numpy as np
import pytest
import torch

from tests.browser.kernel_harness import rel_err, runner

pytestmark = pytest.mark.browser

TOL = 1e-4

gpu = runner("from py_engine.ops.ssd_backward import ssd_backward")


# ---------------------------------------------------------------------------------------------
# float64 references: a plain sequential recurrence (torch autograd) and the same in numpy
# ---------------------------------------------------------------------------------------------

def _softplus_np(v):
    return np.where(v > 20.0, v, np.log1p(np.exp(np.minimum(v, 20.0))))


def forward_np(x, dtr, A_log, B, C, D, dt_bias, h0, dt_min, dt_max):
    """x [nb,T,H,P], dtr [nb,T,H], B/C [nb,T,G,N], h0 [nb,H,P,N] -> (y, h_T, chunk-able states)."""
    nb, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    v = dtr + (dt_bias if dt_bias is not None else 0.0)
    dt = np.clip(_softplus_np(v), dt_min, dt_max)
    A = -np.exp(A_log)
    Bh, Ch = np.repeat(B, H // G, 2), np.repeat(C, H // G, 2)
    h = h0.copy()
    ys, states = [], []
    for t in range(T):
        states.append(h.copy())
        h = np.exp(dt[:, t] * A)[..., None, None] * h + \
            (dt[:, t][..., None] * x[:, t])[..., None] * Bh[:, t][:, :, None, :]
        ys.append(np.einsum("bhpn,bhn->bhp", h, Ch[:, t]) + (D[:, None] * x[:, t] if D is not None else 0))
    return np.stack(ys, 1), h, states


def reference(d, dt_min, dt_max):
    """Gradients of L = sum(dy*y) + sum(dh_last*h_T) by float64 torch autograd."""
    H, G = d["A_log"].shape[0], d["B"].shape[2]
    names = ["x", "dtr", "A_log", "B", "C", "D", "dt_bias", "h0"]
    ts = {k: torch.tensor(d[k], dtype=torch.float64, requires_grad=True) for k in names
          if d.get(k) is not None}
    v = ts["dtr"] + ts["dt_bias"] if "dt_bias" in ts else ts["dtr"]
    dt = torch.clamp(torch.nn.functional.softplus(v, threshold=20.0), dt_min, dt_max)
    A = -torch.exp(ts["A_log"])
    Bh = ts["B"].repeat_interleave(H // G, 2)
    Ch = ts["C"].repeat_interleave(H // G, 2)
    h = ts["h0"]
    x = ts["x"]
    loss = 0.0
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + \
            (dt[:, t][..., None] * x[:, t])[..., None] * Bh[:, t][:, :, None, :]
        y = (h * Ch[:, t][:, :, None, :]).sum(-1)
        if "D" in ts:
            y = y + ts["D"][:, None] * x[:, t]
        loss = loss + (y * torch.tensor(d["dy"][:, t])).sum()
    if d.get("dh") is not None:
        loss = loss + (h * torch.tensor(d["dh"])).sum()
    loss.backward()
    g = {k: t.grad.numpy() for k, t in ts.items()}
    return {"dx": g["x"], "ddt": g["dtr"], "dA_log": g["A_log"], "dB": g["B"], "dC": g["C"],
            "dD": g.get("D"), "ddt_bias": g.get("dt_bias"), "dh0": g["h0"]}


def make_inputs(seed, nb, T, H, P, G, N, init=True, dh=True, D=True, bias=True, extreme=True):
    r = np.random.default_rng(seed)
    f = lambda *s, sc=1.0: (r.standard_normal(s) * sc).astype(np.float32).astype(np.float64)  # noqa: E731
    d = {"x": f(nb, T, H, P), "dtr": f(nb, T, H, sc=0.5),
         "A_log": np.log(r.uniform(1.0, 6.0, H)).astype(np.float32).astype(np.float64),
         "B": f(nb, T, G, N, sc=0.5), "C": f(nb, T, G, N, sc=0.5), "dy": f(nb, T, H, P),
         "D": f(H) if D else None,
         "dt_bias": r.uniform(-2.5, 0.0, H).astype(np.float32).astype(np.float64) if bias else None,
         "h0": f(nb, H, P, N, sc=0.5) if init else np.zeros((nb, H, P, N)),
         "dh": f(nb, H, P, N) if dh else None}
    if extreme:   # the softplus threshold branch (v > 20) and a far negative one
        d["dtr"][0, 0, 0] = 24.0
        d["dtr"][-1, T // 2, H - 1] = -30.0
    return d


def chunk_states(d, chunk, dt_min, dt_max):
    _, _, states = forward_np(d["x"], d["dtr"], d["A_log"], d["B"], d["C"], d["D"], d["dt_bias"],
                              d["h0"], dt_min, dt_max)
    T = d["x"].shape[1]
    return np.stack([states[c] for c in range(0, T, chunk)], 1)   # [nb, nc, H, P, N]


# ---------------------------------------------------------------------------------------------
# The GPU call: inputs as Cols views of the conv output [x | B | C] and in_proj's [.. | dt],
# outputs as Cols views of one conv-output gradient buffer (or plain tensors)
# ---------------------------------------------------------------------------------------------

CALL = """
nb, Tn, H, P, G, N, Lc = {nb}, {T}, {H}, {P}, {G}, {N}, {chunk}
HP, GN = H * P, G * N
cols = {cols}
if cols:
    xv = Cols(T['xbc'], 0, HP, (nb, Tn, HP))
    Bv = Cols(T['xbc'], HP, GN, (nb, Tn, GN))
    Cv = Cols(T['xbc'], HP + GN, GN, (nb, Tn, GN))
    dtv = Cols(T['zdt'], 2, H, (nb, Tn, H))
else:
    xv, Bv, Cv, dtv = T['x'], T['B'], T['C'], T['dtr']
kw = dict(n_groups=G, hc=T['hc'], chunk=Lc, D=T.get('D'), dt_bias=T.get('dt_bias'),
          dt_min={dt_min}, dt_max={dt_max}, dh_last=T.get('dh'), want_dh0=True)
grads = None
if cols:
    gbuf = Tensor.from_bytes(dev, (nb * Tn, HP + 2 * GN), bytes(nb * Tn * (HP + 2 * GN) * 4))
    gdt = Tensor.from_bytes(dev, (nb * Tn, H + 2), bytes(nb * Tn * (H + 2) * 4))
    grads = dict(dx=Cols(gbuf, 0, HP, (nb, Tn, HP)), dB=Cols(gbuf, HP, GN, (nb, Tn, GN)),
                 dC=Cols(gbuf, HP + GN, GN, (nb, Tn, GN)), ddt=Cols(gdt, 2, H, (nb, Tn, H)))
    outs.update(gbuf=gbuf, gdt=gdt)
n0 = b.dispatch_count
g = ssd_backward(b, T['dy'], xv, dtv, T['A_log'], Bv, Cv, grads=grads, **kw)
info['dispatches'] = b.dispatch_count - n0
b.submit()
# the parameter gradients, copied before the second call accumulates into other tensors
first = {{k: await g[k].to_bytes() for k in ('dA_log', 'dD', 'ddt_bias') if g[k] is not None}}
outs.update({{k: Tensor.from_bytes(dev, (len(v) // 4,), v) for k, v in first.items()}})
outs.update({{k: g[k] for k in ('dh0',) + (() if cols else ('dx', 'ddt', 'dB', 'dC'))}})
# again, accumulating the parameter gradients into given tensors (acc0 + grad); its per-token
# gradients and dh0 (new tensors) must equal the first call's bit for bit (fixed-order sums)
acc = dict(dA_log=T['acc_a'], dD=T.get('acc_d'), ddt_bias=T.get('acc_b'))
g2 = ssd_backward(b, T['dy'], xv, dtv, T['A_log'], Bv, Cv, accumulate=True,
                  grads={{k: v for k, v in acc.items() if v is not None}}, **kw)
outs.update({{k + '_acc': g2[k] for k in ('dA_log', 'dD', 'ddt_bias') if g2[k] is not None}})
outs.update({{k + '_2': g2[k] for k in ('dx', 'ddt', 'dB', 'dC', 'dh0')}})
"""


def run_case(engine, d, chunk, cols, dt_min=0.0, dt_max=float("inf"), seed=0):
    nb, T, H, P = d["x"].shape
    G, N = d["B"].shape[2], d["B"].shape[3]
    hc = chunk_states(d, chunk, dt_min, dt_max)
    r = np.random.default_rng(seed + 100)
    arrays = {"dy": d["dy"].reshape(nb, T, H * P), "A_log": d["A_log"], "hc": hc,
              "acc_a": r.standard_normal(H)}
    for k in ("D", "dt_bias", "dh"):
        if d[k] is not None:
            arrays[k] = d[k]
    if d["D"] is not None:
        arrays["acc_d"] = r.standard_normal(H)
    if d["dt_bias"] is not None:
        arrays["acc_b"] = r.standard_normal(H)
    if cols:
        arrays["xbc"] = np.concatenate([d["x"].reshape(nb * T, H * P), d["B"].reshape(nb * T, G * N),
                                        d["C"].reshape(nb * T, G * N)], 1)
        arrays["zdt"] = np.concatenate([r.standard_normal((nb * T, 2)), d["dtr"].reshape(nb * T, H)], 1)
    else:
        arrays.update(x=d["x"].reshape(nb, T, H * P), B=d["B"].reshape(nb, T, G * N),
                      C=d["C"].reshape(nb, T, G * N), dtr=d["dtr"])
    code = CALL.format(nb=nb, T=T, H=H, P=P, G=G, N=N, chunk=chunk, cols=cols,
                       dt_min=repr(float(dt_min)), dt_max=repr(float(dt_max)).replace("inf", "float('inf')"))
    o, info = gpu(engine, code, **arrays)
    if cols:   # unpack the gradient buffers' column windows
        gb = o["gbuf"].reshape(nb, T, H * P + 2 * G * N)
        o["dx"], o["dB"], o["dC"] = gb[..., :H * P], gb[..., H * P:H * P + G * N], gb[..., H * P + G * N:]
        gd = o["gdt"].reshape(nb, T, H + 2)
        assert np.all(gd[..., :2] == 0)     # only the dt columns were written
        o["ddt"] = gd[..., 2:]
    return o, info, arrays


def check(o, info, arrays, ref):
    assert info["dispatches"] == 10
    for k in ("dx", "ddt", "dB", "dC", "dA_log", "dh0"):
        err = rel_err(o[k], ref[k])
        assert err <= TOL, (k, err)
    for k in ("dx", "ddt", "dB", "dC", "dh0"):   # deterministic: a rerun is bit-identical
        assert np.array_equal(np.reshape(o[k], -1), o[k + "_2"]), k
    assert rel_err(o["dA_log_acc"], arrays["acc_a"] + ref["dA_log"]) <= TOL
    for k, a in (("dD", "acc_d"), ("ddt_bias", "acc_b")):
        if ref[k] is not None:
            assert rel_err(o[k], ref[k]) <= TOL, k
            assert rel_err(o[k + "_acc"], arrays[a] + ref[k]) <= TOL, k
        else:
            assert k not in o


CASES = [  # name, nb, T, H, P, G, N, chunk, cols, options
    ("g1_chunks", 2, 11, 3, 3, 1, 5, 4, False, {}),
    ("g1_chunks", 2, 11, 3, 3, 1, 5, 4, True, {}),
    ("g2_one_chunk", 2, 7, 4, 5, 2, 6, 8, False, {}),
    ("g2_chunks_cols_dtmax", 2, 13, 4, 6, 2, 20, 5, True, {"dt_max": 0.4, "dt_min": 0.05}),
    ("g2_bare", 2, 9, 4, 3, 2, 17, 4, False, {"init": False, "dh": False, "D": False, "bias": False}),
    ("real_shapes", 2, 24, 2, 64, 1, 128, 8, True, {}),
]


@pytest.mark.parametrize("name,nb,T,H,P,G,N,chunk,cols,opt", CASES,
                         ids=[f"{c[0]}-{'cols' if c[8] else 'tensors'}" for c in CASES])
def test_ssd_backward(engine, name, nb, T, H, P, G, N, chunk, cols, opt):
    opt = dict(opt)
    dt_min, dt_max = opt.pop("dt_min", 0.0), opt.pop("dt_max", float("inf"))
    d = make_inputs(zlib.crc32(name.encode()) % 1000, nb, T, H, P, G, N, **opt)
    if np.isfinite(dt_max):   # the clamp must actually bite (both sides)
        sp = _softplus_np(d["dtr"] + d["dt_bias"])
        assert (sp > dt_max).mean() > 0.1 and (sp < dt_min).any()
    ref = reference(d, dt_min, dt_max)
    o, info, arrays = run_case(engine, d, chunk, cols, dt_min, dt_max)
    check(o, info, arrays, ref)
    if name == "g1_chunks" and cols:
        # spot check one scalar of dA_log and of dt_bias against central differences of the
        # float64 numpy forward (the math the GPU forward runs)
        def loss(dd):
            y, hT, _ = forward_np(dd["x"], dd["dtr"], dd["A_log"], dd["B"], dd["C"], dd["D"],
                                  dd["dt_bias"], dd["h0"], dt_min, dt_max)
            return np.sum(y * d["dy"]) + np.sum(hT * d["dh"])
        eps = 1e-6
        for key, gk, h in (("A_log", "dA_log", 1), ("dt_bias", "ddt_bias", 2)):
            plus, minus = dict(d), dict(d)
            plus[key], minus[key] = d[key].copy(), d[key].copy()
            plus[key][h] += eps
            minus[key][h] -= eps
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            assert abs(o[gk][h] - fd) <= TOL * np.abs(ref[gk]).max(), (key, o[gk][h], fd)
            assert abs(ref[gk][h] - fd) <= 1e-6 * max(1.0, abs(fd)), key


def test_reference_self_consistency():
    """The float64 references agree with each other: every torch autograd gradient (clamp active
    on both sides, dh_last given) against central differences of the numpy forward."""
    d = make_inputs(3, 2, 6, 2, 3, 2, 4)
    dt_min, dt_max = 0.05, 0.6
    ref = reference(d, dt_min, dt_max)
    r = np.random.default_rng(0)

    def loss(dd):
        y, hT, _ = forward_np(dd["x"], dd["dtr"], dd["A_log"], dd["B"], dd["C"], dd["D"],
                              dd["dt_bias"], dd["h0"], dt_min, dt_max)
        return np.sum(y * d["dy"]) + np.sum(hT * d["dh"])
    names = {"x": "dx", "dtr": "ddt", "A_log": "dA_log", "B": "dB", "C": "dC", "D": "dD",
             "dt_bias": "ddt_bias", "h0": "dh0"}
    eps = 1e-6
    for k, gk in names.items():
        v = r.standard_normal(d[k].shape)
        fd = (loss({**d, k: d[k] + eps * v}) - loss({**d, k: d[k] - eps * v})) / (2 * eps)
        assert abs(fd - np.sum(ref[gk] * v)) <= 1e-6 * max(1.0, abs(fd)), k


def test_argument_errors():
    """Shape mistakes are named before anything reaches the GPU."""
    from py_engine.ops.ssd_backward import ssd_backward

    class _T:
        def __init__(self, *shape):
            self.shape = shape

    class _B:
        device = None

    nb, T, H, P, G, N = 2, 6, 4, 3, 2, 5
    args = lambda **kw: dict(dict(  # noqa: E731
        dy=_T(nb, T, H * P), x=_T(nb, T, H * P), dt=_T(nb, T, H), A_log=_T(H), B=_T(nb, T, G * N),
        C=_T(nb, T, G * N), n_groups=G, hc=_T(nb, 2, H, P, N), chunk=4), **kw)
    for kw, msg in (({"n_groups": 3}, "must divide"), ({"hc": _T(nb, 3, H, P, N)}, "hc must be"),
                    ({"hc": None}, "required"), ({"C": _T(nb, T, G * N + 1)}, "C: expected"),
                    ({"dy": _T(nb, T + 1, H * P)}, "dy has shape"),
                    ({"dh_last": _T(nb, H, P, N + 1)}, "dh_last"), ({"D": _T(H + 1)}, "D must")):
        with pytest.raises(ValueError, match=msg):
            ssd_backward(_B(), **args(**kw))
