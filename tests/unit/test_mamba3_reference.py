"""Cross-checks of the float64 Mamba-3 (SISO) reference tests/reference/mamba3_numpy.py, and of the fixtures
tools/make_mamba3_fixtures.py wrote from it (mamba_ssm's kernels need CUDA, so the reference is checked against
itself in independent formulations): sequential == chunked, forward == unrolled step, == a torch float64
re-implementation written here (complex-number rotation), and its autograd gradient == finite differences."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference import mamba3_numpy as m3

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "models"
NAMES = ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm", "mamba3-g2-r05-tied-softplus",
         "mamba3-mimo-r2-g1-r05-tied", "mamba3-mimo-r4-g2-r10-onorm-softplus"]

CFGS = {
    # N=10, rope 0.5 -> split 5 rounded to 4 -> S=2: dims 4..9 unrotated
    "g1-n10": dict(d_model=12, expand=2, headdim=6, d_state=10, ngroups=1, rope_fraction=0.5, A_floor=1e-4),
    "g2-onorm": dict(d_model=12, expand=2, headdim=6, d_state=8, ngroups=2, rope_fraction=1.0, A_floor=0.3,
                     is_outproj_norm=True),
    "g2-softplus": dict(d_model=10, expand=2, headdim=5, d_state=6, ngroups=2, rope_fraction=1.0, A_floor=0.3,
                        A_activation="softplus"),
}
# MIMO (rank R; checked once against state-spaces' mamba3_MIMO_chunk_ref / _step_ref, see the reference's header)
MIMO_CFGS = {
    "mimo-r2-g1": dict(d_model=12, expand=2, headdim=6, d_state=16, ngroups=1, rope_fraction=0.5, A_floor=1e-4,
                       is_mimo=True, mimo_rank=2),
    "mimo-r3-g2-onorm": dict(d_model=12, expand=2, headdim=6, d_state=8, ngroups=2, rope_fraction=1.0, A_floor=0.3,
                             is_outproj_norm=True, is_mimo=True, mimo_rank=3),
    # N=12, rope 0.5 -> S=3: pairs (i, i+6) for i < 3, dims 3..5 and 9..11 unrotated
    "mimo-r4-softplus": dict(d_model=8, expand=2, headdim=4, d_state=12, ngroups=1, rope_fraction=0.5, A_floor=0.3,
                             A_activation="softplus", is_mimo=True, mimo_rank=4),
}
ALL_CFGS = dict(CFGS, **MIMO_CFGS)


def rand_params(cfg, seed):
    rng = np.random.RandomState(seed)
    D = m3.dims(cfg)
    d, I, H, P, N, G, S, R = (D[k] for k in "d I H P N G S R".split())
    p = {"in_proj.weight": rng.randn(2 * I + 2 * R * G * N + 3 * H + S, d) * 0.8,
         "dt_bias": rng.randn(H) * 0.5 - 0.5, "D": 1 + rng.randn(H) * 0.5,
         "B_bias": 1 + rng.randn(H, R, N) * 0.5, "C_bias": 1 + rng.randn(H, R, N) * 0.5,
         "B_norm.weight": 1 + rng.randn(N) * 0.3, "C_norm.weight": 1 + rng.randn(N) * 0.3,
         "out_proj.weight": rng.randn(d, I) / math.sqrt(I)}
    if cfg.get("is_outproj_norm"):
        p["norm.weight"] = 1 + rng.randn(I) * 0.3
    if D["mimo"]:
        p.update(mimo_x=rng.randn(H, R, P) / R, mimo_z=1 + rng.randn(H, R, P) * 0.5, mimo_o=rng.randn(H, R, P) / R)
    return p


def rand_state(cfg, seed):
    rng = np.random.RandomState(seed)
    D = m3.dims(cfg)
    H, P, N, S, R = D["H"], D["P"], D["N"], D["S"], D["R"]
    k = rng.randn(R, H, N) if D["mimo"] else rng.randn(H, N)
    return dict(angle=rng.rand(H, S) * 2 * math.pi, ssm=rng.randn(H, P, N), k=k, v=rng.randn(H, P))


def close(a, b, tol=1e-11):
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= tol * scale, np.abs(np.asarray(a) - np.asarray(b)).max()


def angle_close(a, b, tol=1e-11):
    d = np.remainder(np.asarray(a) - np.asarray(b) + math.pi, 2 * math.pi) - math.pi
    assert np.abs(d).max() <= tol


def states_close(s1, s2, tol=1e-11):
    angle_close(s1["angle"], s2["angle"], tol)
    for k in ("ssm", "k", "v"):
        close(s1[k], s2[k], tol)


@pytest.mark.parametrize("name", list(ALL_CFGS))
@pytest.mark.parametrize("init", ["zero", "random"])
def test_sequential_equals_chunked(name, init):
    cfg = ALL_CFGS[name]
    p = rand_params(cfg, 1)
    u = np.random.RandomState(2).randn(19, cfg["d_model"])
    st0 = None if init == "zero" else rand_state(cfg, 3)
    ref, sref = m3.mixer_forward(p, cfg, u, st0, "sequential")
    assert np.abs(ref).max() > 1e-2
    for chunk in (1, 4, 7, 64):
        out, st = m3.mixer_forward(p, cfg, u, st0, "chunked", chunk)
        close(out, ref)
        states_close(st, sref)


@pytest.mark.parametrize("name", list(ALL_CFGS))
@pytest.mark.parametrize("init", ["zero", "random"])
def test_forward_equals_unrolled_step(name, init):
    cfg = ALL_CFGS[name]
    p = rand_params(cfg, 4)
    u = np.random.RandomState(5).randn(13, cfg["d_model"])
    st0 = m3.zero_state(cfg) if init == "zero" else rand_state(cfg, 6)
    ref, sref = m3.mixer_forward(p, cfg, u, st0, "chunked", 5)
    st, outs = st0, []
    for t in range(u.shape[0]):
        o, st = m3.mixer_step(p, cfg, u[t], st)
        outs.append(o)
    close(np.stack(outs), ref)
    states_close(st, sref)


# ---------------------------------------------------------------------------------------------------------
# independent torch float64 implementation (complex rotation, heads looped, explicit group expansion)

def _proj(p, name, v):
    """v @ W^T of the mixer's `name` projection (in_proj / out_proj): through p[name] when the
    caller passes the module itself (an nn.Linear, which PEFT may have wrapped with LoRA:
    tests/unit/test_mamba3_lora_native.py), else with the matrix p[name + ".weight"]."""
    module = p.get(name)
    return module(v) if module is not None else v @ p[name + ".weight"].T


def torch_mixer(p, cfg, u, st):
    d = cfg["d_model"]
    I = cfg["expand"] * d
    P, N, G = cfg["headdim"], cfg["d_state"], cfg["ngroups"]
    H = I // P
    nrot = int(N * cfg["rope_fraction"]) // 2 * 2
    S = nrot // 2
    proj = _proj(p, "in_proj", u)
    off = [0]
    for n in (I, I, G * N, G * N, H, H, H, S):
        off.append(off[-1] + n)
    z, x, B, C, ddt, dA, tr, an = (proj[:, off[i]:off[i + 1]] for i in range(8))
    f = (torch.nn.functional.softplus if cfg.get("A_activation") == "softplus"
         else (lambda a: torch.where(a >= 0, 1 + a, 1 / (1 - torch.clamp(a, max=0)))))
    A = torch.clamp(-f(dA), max=-cfg["A_floor"])
    dt = torch.nn.functional.softplus(ddt + p["dt_bias"])
    lam = torch.sigmoid(tr)
    th = torch.tanh(an) * math.pi

    def nrm(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    phi, Sm, kp, vp = st
    outs = []
    for t in range(u.shape[0]):
        phi = phi + th[t][None, :] * dt[t][:, None]
        rot = torch.polar(torch.ones_like(phi), phi)                       # [H, S] complex
        ys = []
        newS, ks = [], []
        for h in range(H):
            g = h * G // H
            b = nrm(B[t, g * N:(g + 1) * N], p["B_norm.weight"]) + p["B_bias"][h, 0]
            c = nrm(C[t, g * N:(g + 1) * N], p["C_norm.weight"]) + p["C_bias"][h, 0]
            k = torch.cat([torch.view_as_real(torch.view_as_complex(b[:nrot].reshape(S, 2).contiguous()) * rot[h]).reshape(-1), b[nrot:]])
            q = torch.cat([torch.view_as_real(torch.view_as_complex(c[:nrot].reshape(S, 2).contiguous()) * rot[h]).reshape(-1), c[nrot:]])
            v = x[t, h * P:(h + 1) * P]
            a = torch.exp(A[t, h] * dt[t, h])
            Sh = a * Sm[h] + (1 - lam[t, h]) * dt[t, h] * a * torch.outer(vp[h], kp[h]) + lam[t, h] * dt[t, h] * torch.outer(v, k)
            y = Sh @ q + p["D"][h] * v
            zz = z[t, h * P:(h + 1) * P]
            if cfg.get("is_outproj_norm"):
                y = nrm(y, p["norm.weight"][h * P:(h + 1) * P])
            ys.append(y * zz * torch.sigmoid(zz))
            newS.append(Sh)
            ks.append(k)
        Sm, kp, vp = torch.stack(newS), torch.stack(ks), x[t].reshape(H, P)
        outs.append(_proj(p, "out_proj", torch.cat(ys)))
    return torch.stack(outs), (phi, Sm, kp, vp)


def torch_mixer_mimo(p, cfg, u, st):
    """Independent MIMO form: complex rotation of the (i, i + N/2) halves, ranks and heads looped."""
    d, P, N, G, R = cfg["d_model"], cfg["headdim"], cfg["d_state"], cfg["ngroups"], cfg["mimo_rank"]
    I = cfg["expand"] * d
    H = I // P
    S = int(N * cfg["rope_fraction"]) // 2 * 2 // 2
    proj = _proj(p, "in_proj", u)
    off = [0]
    for n in (I, I, R * G * N, R * G * N, H, H, H, S):
        off.append(off[-1] + n)
    z, x, B, C, ddt, dA, tr, an = (proj[:, off[i]:off[i + 1]] for i in range(8))
    f = (torch.nn.functional.softplus if cfg.get("A_activation") == "softplus"
         else (lambda a: torch.where(a >= 0, 1 + a, 1 / (1 - torch.clamp(a, max=0)))))
    A = torch.clamp(-f(dA), max=-cfg["A_floor"])
    dt = torch.nn.functional.softplus(ddt + p["dt_bias"])
    lam, th = torch.sigmoid(tr), torch.tanh(an) * math.pi
    nrm = lambda v, w: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731

    def rot(v, ph):
        c = torch.complex(v[:S], v[N // 2:N // 2 + S]) * torch.polar(torch.ones_like(ph), ph)
        return torch.cat([c.real, v[S:N // 2], c.imag, v[N // 2 + S:]])

    phi, Sm, kp, v0 = st
    vp = [[v0[h] * p["mimo_x"][h, r] for r in range(R)] for h in range(H)]
    outs = []
    for t in range(u.shape[0]):
        phi = phi + th[t][None, :] * dt[t][:, None]
        newS, ks, vs, ys = [], [], [], []
        for h in range(H):
            g = h * G // H
            a = torch.exp(A[t, h] * dt[t, h])
            kr, qr, vr = [], [], []
            for r in range(R):
                o = (r * G + g) * N
                kr.append(rot(nrm(B[t, o:o + N], p["B_norm.weight"]) + p["B_bias"][h, r], phi[h]))
                qr.append(rot(nrm(C[t, o:o + N], p["C_norm.weight"]) + p["C_bias"][h, r], phi[h]))
                vr.append(x[t, h * P:(h + 1) * P] * p["mimo_x"][h, r])
            Sh = a * Sm[h]
            for r in range(R):
                Sh = Sh + (1 - lam[t, h]) * dt[t, h] * a * torch.outer(vp[h][r], kp[r, h]) \
                    + lam[t, h] * dt[t, h] * torch.outer(vr[r], kr[r])
            yh = 0
            for r in range(R):
                y = Sh @ qr[r] + p["D"][h] * vr[r]
                if cfg.get("is_outproj_norm"):
                    y = nrm(y, p["norm.weight"][h * P:(h + 1) * P])
                zz = z[t, h * P:(h + 1) * P] * p["mimo_z"][h, r]
                yh = yh + y * zz * torch.sigmoid(zz) * p["mimo_o"][h, r]
            newS.append(Sh)
            ks.append(torch.stack(kr))
            vs.append(vr)
            ys.append(yh)
        Sm, kp, vp = torch.stack(newS), torch.stack(ks, 1), vs
        outs.append(_proj(p, "out_proj", torch.cat(ys)))
    return torch.stack(outs), (phi, Sm, kp, x[-1].reshape(H, P))


def torch_mixer_from_zero(p, cfg, u):
    """The torch mixer the config names (SISO or MIMO) over u [T, d_model] from the zero state
    -> [T, d_model]. cfg: mamba_ssm's ssm_cfg plus d_model; p: the mixer's tensors by relative
    name (torch float64), or the in_proj / out_proj modules under those names. The whole-LM
    references (tests/browser/test_mamba3_training.py,
    tests/unit/test_bidirectional_native.py) build their layers on it."""
    d, P, N = cfg["d_model"], cfg["headdim"], cfg["d_state"]
    H = cfg["expand"] * d // P
    S = int(N * cfg["rope_fraction"]) // 2
    mimo = bool(cfg.get("is_mimo"))
    R = cfg.get("mimo_rank", 1) if mimo else 1
    z = lambda *shape: torch.zeros(*shape, dtype=u.dtype)  # noqa: E731
    st = (z(H, S), z(H, P, N), z(R, H, N) if mimo else z(H, N), z(H, P))
    out, _ = (torch_mixer_mimo if mimo else torch_mixer)(p, cfg, u, st)
    return out


@pytest.mark.parametrize("name", list(MIMO_CFGS))
def test_torch_mimo_reimplementation_agrees(name):
    cfg = MIMO_CFGS[name]
    p = rand_params(cfg, 7)
    u = np.random.RandomState(8).randn(11, cfg["d_model"])
    st0 = rand_state(cfg, 9)
    ref, sref = m3.mixer_forward(p, cfg, u, st0, "chunked", 4)
    tst = tuple(torch.tensor(st0[k]) for k in ("angle", "ssm", "k", "v"))
    out, (phi, Sm, kp, vp) = torch_mixer_mimo(to_t(p), cfg, torch.tensor(u), tst)
    close(out.numpy(), ref)
    angle_close(phi.numpy(), sref["angle"])
    close(Sm.numpy(), sref["ssm"])
    close(kp.numpy(), sref["k"])
    close(vp.numpy(), sref["v"])


def to_t(p):
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in p.items()}


@pytest.mark.parametrize("name", list(CFGS))
def test_torch_reimplementation_agrees(name):
    cfg = CFGS[name]
    p = rand_params(cfg, 7)
    u = np.random.RandomState(8).randn(11, cfg["d_model"])
    st0 = rand_state(cfg, 9)
    ref, sref = m3.mixer_forward(p, cfg, u, st0, "chunked", 4)
    tst = tuple(torch.tensor(st0[k]) for k in ("angle", "ssm", "k", "v"))
    out, (phi, Sm, kp, vp) = torch_mixer(to_t(p), cfg, torch.tensor(u), tst)
    close(out.numpy(), ref)
    angle_close(phi.numpy(), sref["angle"])      # torch version does not wrap mod 2pi
    close(Sm.numpy(), sref["ssm"])
    close(kp.numpy(), sref["k"])
    close(vp.numpy(), sref["v"])


@pytest.mark.parametrize("pname,idx", [("dt_bias", (1,)), ("B_bias", (0, 0, 1)), ("in_proj.weight", (-1, 2))])
def test_finite_difference_gradient(pname, idx):
    cfg = CFGS["g2-onorm"]
    p = rand_params(cfg, 10)
    u = np.random.RandomState(11).randn(9, cfg["d_model"])
    st0 = rand_state(cfg, 12)
    r = np.random.RandomState(13).randn(9, cfg["d_model"])
    tp = to_t(p)
    tp[pname].requires_grad_(True)
    tst = tuple(torch.tensor(st0[k]) for k in ("angle", "ssm", "k", "v"))
    out, _ = torch_mixer(tp, cfg, torch.tensor(u), tst)
    (out * torch.tensor(r)).sum().backward()
    g_auto = tp[pname].grad[idx].item()

    def loss(delta):
        q = {k: v.copy() for k, v in p.items()}
        q[pname][idx] += delta
        return float((m3.mixer_forward(q, cfg, u, st0, "sequential")[0] * r).sum())

    h = 1e-5
    g_fd = (loss(h) - loss(-h)) / (2 * h)
    assert abs(g_auto) > 1e-3
    assert abs(g_fd - g_auto) <= 1e-6 * max(1.0, abs(g_auto))


# ---------------------------------------------------------------------------------------------------------
# fixtures

@pytest.mark.parametrize("name", NAMES)
def test_fixture_reproduces(name):
    model = m3.load_fixture(FIX / name)
    exp = np.load(FIX / name / "expected.npz")
    assert exp["prompt_ids"].shape == (21,) and exp["greedy_ids"].shape == (16,)
    logits, ids, glog, _ = m3.greedy(model, exp["prompt_ids"], 16)
    _, states = m3.lm_forward(model, exp["prompt_ids"])      # the stored states: after the prompt
    np.testing.assert_allclose(logits, exp["logits"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ids, exp["greedy_ids"])
    np.testing.assert_allclose(glog, exp["greedy_logits"], rtol=0, atol=1e-5)
    for k, v in m3.stack_states(states).items():
        np.testing.assert_allclose(v, exp[k], rtol=0, atol=1e-5)
    # the chunked LM gives the same prompt logits; the prompt's context matters
    lc, _ = m3.lm_forward(model, exp["prompt_ids"], mode="chunked")
    close(lc, logits, 1e-10)
    l_short = m3.lm_logits(model, exp["prompt_ids"][10:])
    assert np.abs(l_short[-1] - logits[-1]).max() > 1e-2
    # greedy decode == re-running the whole sequence through the forward
    full = np.concatenate([exp["prompt_ids"], ids[:-1]])
    close(m3.lm_logits(model, full)[20:], glog, 1e-10)


def test_fixture_parameters_all_matter():
    """every mixer parameter is away from its init value (ones / zeros) in every fixture"""
    for name in NAMES:
        W = m3.load_fixture(FIX / name)["weights"]
        for k, v in W.items():
            if k.endswith(("norm.weight", "B_bias", "C_bias", ".D", "mimo_z")):
                assert np.abs(v - 1).max() > 0.05, k
