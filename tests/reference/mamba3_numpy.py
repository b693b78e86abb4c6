"""Float64 numpy reference of Mamba-3 (SISO) as in state-spaces/mamba ``mamba_ssm/modules/mamba3.py`` and
the pure-PyTorch oracles ``mamba3_siso_step_ref`` / ``mamba3_siso_fwd_ref`` (tests/ops/triton/test_mamba3_siso.py),
read at commit e9594ce (2026-07), and MIMO (mimo_rank R > 1) as that module with the TileLang oracles
``mamba3_MIMO_step_ref`` / ``mamba3_MIMO_chunk_ref`` (tests/ops/tilelang/test_mamba3_mimo.py). Own code; pure
numpy, float64.

Shapes (one sequence, no batch; d = d_model, I = expand*d = H*P, G = ngroups, N = d_state)
------------------------------------------------------------------------------------------
* in_proj.weight [2I + 2GN + 3H + S, d], rows  [z (I) | x (I) | B (G*N) | C (G*N) | dd_dt (H) | dd_A (H) | trap (H) | angles (S)]
  S = num_rope_angles = (floor(N * rope_fraction) rounded down to even) / 2  (rope_fraction in {0.5, 1.0})
* dt_bias [H], D [H], B_bias / C_bias [H, 1, N] (mimo_rank axis = 1 for SISO), B_norm.weight / C_norm.weight [N],
  norm.weight [I] (only when is_outproj_norm), out_proj.weight [d, I].  No conv1d, no A_log.
* states (per layer): angle [H, S], ssm [H, P, N], k [H, N] (upstream keeps [batch, 1, H, N]), v [H, P]

Math per token t, head h (group g = h // (H/G)):
    DT  = softplus(dd_dt + dt_bias)                 (torch threshold 20)
    A   = min(-f(dd_A), -A_floor);   f = heavy_tail (x>=0: 1+x, x<0: 1/(1-x)), upstream since PR #962;
                                     f = softplus before it (cfg "A_activation": "softplus"; not a Mamba3 argument)
    B~  = RMSNorm_N(B_g) * B_norm.weight (eps 1e-5) + B_bias[h, 0];   C~ likewise (biases added BEFORE rotation)
    theta = tanh(angles) * pi   (S angles shared by all heads);  phi += theta * DT;  phi = phi mod 2pi
    k = rot(B~, phi), q = rot(C~, phi): pairs (2i, 2i+1), i < S rotated by phi_i, dims >= 2S unchanged
    lam = sigmoid(trap), alpha = exp(A*DT), beta = (1-lam)*DT*alpha, gamma = lam*DT
    S_h = alpha S_h + beta v_prev k_prev^T + gamma v k^T            [P, N]
    y   = S_h q + D_h v
    y  *= silu(z)                       (is_outproj_norm=False)
    y   = RMSNorm_per_head(y) * norm.weight * silu(z)   (is_outproj_norm=True; group_size = P, eps 1e-5)
    out = out_proj(y);   k_prev, v_prev = k, v  (k_prev is stored ROTATED)

LM (MambaLMHeadModel, rms_norm, fused_add_norm, residual_in_fp32, d_intermediate 0):
    r = emb[ids]; h = 0;  per layer: r = r + h; h = mixer(RMSNorm(r) * norm.weight);  logits = RMSNorm(r + h) @ lm_head^T

MIMO (is_mimo, rank R = mimo_rank; SISO is R = 1 with every projection 1):
    in_proj B / C rows are (r g n) ordered, R*G*N each; B_bias / C_bias [H, R, N]; mimo_x / mimo_z / mimo_o [H, R, P]
    k_r = rot_half(B~_r, phi), q_r likewise: pairs (i, i + N/2), i < S  (the TileLang kernels' and the module's decode
          convention; mamba3_MIMO_step_ref's pairwise rotation is its own test-only convention)
    v_r = x * mimo_x[:, r];  S_h = alpha S_h + beta sum_r v_prev_r k_prev_r^T + gamma sum_r v_r k_r^T
    y_r = S_h q_r + D_h v_r;  g_r = y_r * silu(z * mimo_z[:, r])  (is_outproj_norm: RMSNorm_P(y_r) * norm.weight[h]
          * silu(z * mimo_z[:, r]), the module's fused pre-gate head-wise norm);  y = sum_r g_r * mimo_o[:, r]
    states: angle [H, S], ssm [H, P, N], k [R, H, N] (rotated, biased), v [H, P] (raw x: v_prev_r = v * mimo_x[:, r])

Functions: preprocess, scan_sequential, scan_chunked, mixer_forward, mixer_step, zero_state, lm_forward,
lm_logits, lm_step, greedy, load_fixture.
"""
import json
import math
from pathlib import Path

import numpy as np

EPS = 1e-5
TWO_PI = 2.0 * math.pi


def softplus(x):
    """torch F.softplus (beta 1, threshold 20)."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def heavy_tail(x):
    """f(x) = 1 + x (x >= 0), 1 / (1 - x) (x < 0): upstream heavy_tail_activation."""
    return np.maximum(x, 0.0) + 1.0 / (1.0 - np.minimum(x, 0.0))


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def silu(x):
    return x * sigmoid(x)


def rmsnorm(x, w, eps=EPS):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def dims(cfg):
    """cfg: a Mamba3 ssm_cfg dict plus d_model. Returns dict of derived sizes."""
    d = cfg["d_model"]
    I = int(cfg.get("expand", 2) * d)
    P = cfg["headdim"]
    assert I % P == 0
    N = cfg["d_state"]
    rf = cfg.get("rope_fraction", 0.5)
    assert rf in (0.5, 1.0)
    split = int(N * rf)
    split -= split % 2
    S = split // 2
    assert S > 0
    R = int(cfg.get("mimo_rank", 4)) if cfg.get("is_mimo", False) else 1
    return dict(d=d, I=I, P=P, H=I // P, N=N, G=cfg.get("ngroups", 1), S=S, R=R, mimo=bool(cfg.get("is_mimo", False)))


def rotate_half(v, phi):
    """v [..., N], phi [..., S]: pairs (i, i + N/2) for i < S rotated by phi_i (the MIMO layout)."""
    S, h = phi.shape[-1], v.shape[-1] // 2
    out = v.copy()
    a, b = v[..., 0:S], v[..., h:h + S]
    c, s = np.cos(phi), np.sin(phi)
    out[..., 0:S] = a * c - b * s
    out[..., h:h + S] = a * s + b * c
    return out


def rotate(v, phi):
    """v [..., N], phi [..., S]: pairs (2i, 2i+1) for i < S rotated by phi_i (the SISO 'pairwise' layout)."""
    S = phi.shape[-1]
    out = v.copy()
    a, b = v[..., 0:2 * S:2], v[..., 1:2 * S:2]
    c, s = np.cos(phi), np.sin(phi)
    out[..., 0:2 * S:2] = a * c - b * s
    out[..., 1:2 * S:2] = a * s + b * c
    return out


def preprocess(p, cfg, u):
    """u [T, d] (mixer input, already normed) -> dict of per-token quantities (float64):
    z, x [T, H, P]; Bt, Ct [T, H, N] (normed, + bias, NOT rotated); DT, ADT, lam [T, H]; theta [T, S]."""
    D_ = dims(cfg)
    I, P, H, N, G, S, R = D_["I"], D_["P"], D_["H"], D_["N"], D_["G"], D_["S"], D_["R"]
    T = u.shape[0]
    proj = np.asarray(u, np.float64) @ p["in_proj.weight"].T
    sizes = [I, I, R * G * N, R * G * N, H, H, H, S]
    z, x, B, C, dd_dt, dd_A, trap, ang = np.split(proj, np.cumsum(sizes)[:-1], axis=-1)
    act = heavy_tail if cfg.get("A_activation", "heavy_tail") == "heavy_tail" else softplus
    A = np.minimum(-act(dd_A), -cfg.get("A_floor", 1e-4))
    DT = softplus(dd_dt + p["dt_bias"])
    head_group = np.arange(H) // (H // G)
    if D_["mimo"]:       # B, C [T, R, H, N]: rows (r g n), bias [H, R, N] -> [R, H, N]
        B = rmsnorm(B.reshape(T, R, G, N), p["B_norm.weight"])[:, :, head_group] + p["B_bias"].transpose(1, 0, 2)
        C = rmsnorm(C.reshape(T, R, G, N), p["C_norm.weight"])[:, :, head_group] + p["C_bias"].transpose(1, 0, 2)
        return dict(z=z.reshape(T, H, P), x=x.reshape(T, H, P), Bt=B, Ct=C, DT=DT, ADT=A * DT,
                    lam=sigmoid(trap), theta=np.tanh(ang) * math.pi)
    B = rmsnorm(B.reshape(T, G, N), p["B_norm.weight"])[:, head_group] + p["B_bias"][:, 0]
    C = rmsnorm(C.reshape(T, G, N), p["C_norm.weight"])[:, head_group] + p["C_bias"][:, 0]
    return dict(z=z.reshape(T, H, P), x=x.reshape(T, H, P), Bt=B, Ct=C, DT=DT, ADT=A * DT,
                lam=sigmoid(trap), theta=np.tanh(ang) * math.pi)


def zero_state(cfg):
    D_ = dims(cfg)
    H, P, N, S, R = D_["H"], D_["P"], D_["N"], D_["S"], D_["R"]
    k = np.zeros((R, H, N)) if D_["mimo"] else np.zeros((H, N))
    return dict(angle=np.zeros((H, S)), ssm=np.zeros((H, P, N)), k=k, v=np.zeros((H, P)))


def scan_sequential(pre, Dskip, state):
    """The recurrence token by token. Returns y [T, H, P] (before gate/norm, D included), final state."""
    phi, Sm, kp, vp = (state[k].astype(np.float64).copy() for k in ("angle", "ssm", "k", "v"))
    T = pre["x"].shape[0]
    ys = []
    for t in range(T):
        dt, lam = pre["DT"][t], pre["lam"][t]
        phi = phi + pre["theta"][t][None, :] * dt[:, None]
        phi = phi - TWO_PI * np.floor(phi / TWO_PI)
        q = rotate(pre["Ct"][t], phi)
        k = rotate(pre["Bt"][t], phi)
        v = pre["x"][t]
        alpha = np.exp(pre["ADT"][t])
        beta = (1.0 - lam) * dt * alpha
        gamma = lam * dt
        Sm = (alpha[:, None, None] * Sm + beta[:, None, None] * vp[:, :, None] * kp[:, None, :]
              + gamma[:, None, None] * v[:, :, None] * k[:, None, :])
        ys.append(np.einsum("hpn,hn->hp", Sm, q) + Dskip[:, None] * v)
        kp, vp = k, v
    return np.stack(ys), dict(angle=phi, ssm=Sm, k=kp, v=vp)


def scan_chunked(pre, Dskip, state, chunk=8):
    """Chunked quadratic ("attention") form with a carried state, as mamba3_siso_fwd_ref but per chunk:
    inside a chunk, key s carries scale_s = lam_s DT_s + (1 - lam_{s+1}) DT_{s+1} (the second term 0 at the
    chunk end, added instead to the next chunk's entry state), decay exp(sum_{s<r<=t} ADT_r), and the
    diagonal over-count (1 - lam_{t+1}) DT_{t+1} (q_t . k_t) v_t is subtracted."""
    phi0, Sm, kp, vp = (state[k].astype(np.float64).copy() for k in ("angle", "ssm", "k", "v"))
    T, H, P = pre["x"].shape
    ys = []
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(T, c0 + chunk))
        DT, lam, ADT = pre["DT"][sl], pre["lam"][sl], pre["ADT"][sl]      # [L, H]
        x, L = pre["x"][sl], DT.shape[0]
        phi = phi0[None] + np.cumsum(pre["theta"][sl][:, None, :] * DT[:, :, None], axis=0)
        phi = phi - TWO_PI * np.floor(phi / TWO_PI)                        # [L, H, S]
        q, k = rotate(pre["Ct"][sl], phi), rotate(pre["Bt"][sl], phi)      # [L, H, N]
        acc = Sm + ((1.0 - lam[0]) * DT[0])[:, None, None] * vp[:, :, None] * kp[:, None, :]
        shift = np.zeros_like(DT)
        shift[:-1] = (1.0 - lam[1:]) * DT[1:]
        scale = lam * DT + shift
        cs = np.cumsum(ADT, axis=0)                                        # [L, H]
        seg = cs[:, None, :] - cs[None, :, :]                              # [t, s, H]
        mask = np.tril(np.ones((L, L), bool))[:, :, None]
        decay = np.where(mask, np.exp(np.where(mask, seg, 0.0)), 0.0)
        qk = np.einsum("thn,shn->tsh", q, k) * decay * scale[None, :, :]
        y = np.einsum("tsh,shp->thp", qk, x)
        y += np.einsum("hpn,thn->thp", acc, q) * np.exp(cs)[:, :, None]
        y -= (np.einsum("thn,thn->th", q, k) * shift)[:, :, None] * x
        y += Dskip[None, :, None] * x
        ys.append(y)
        w = np.exp(cs[-1][None, :] - cs) * scale                           # [L, H]
        Sm = np.exp(cs[-1])[:, None, None] * acc + np.einsum("sh,shp,shn->hpn", w, x, k)
        phi0, kp, vp = phi[-1], k[-1], x[-1]
    return np.concatenate(ys), dict(angle=phi0, ssm=Sm, k=kp, v=vp)


def scan_sequential_mimo(pre, p, state):
    """MIMO recurrence token by token. Returns y [T, R, H, P] (before gate, D included), final state."""
    phi, Sm, kp, v0 = (state[k].astype(np.float64).copy() for k in ("angle", "ssm", "k", "v"))
    mx = p["mimo_x"].transpose(1, 0, 2)                                  # [R, H, P]
    vp = v0[None] * mx
    T = pre["x"].shape[0]
    ys = []
    for t in range(T):
        dt, lam = pre["DT"][t], pre["lam"][t]
        phi = phi + pre["theta"][t][None, :] * dt[:, None]
        phi = phi - TWO_PI * np.floor(phi / TWO_PI)
        q = rotate_half(pre["Ct"][t], phi[None])                        # [R, H, N]
        k = rotate_half(pre["Bt"][t], phi[None])
        v = pre["x"][t][None] * mx                                       # [R, H, P]
        alpha = np.exp(pre["ADT"][t])
        beta = (1.0 - lam) * dt * alpha
        gamma = lam * dt
        Sm = (alpha[:, None, None] * Sm + beta[:, None, None] * np.einsum("rhp,rhn->hpn", vp, kp)
              + gamma[:, None, None] * np.einsum("rhp,rhn->hpn", v, k))
        ys.append(np.einsum("hpn,rhn->rhp", Sm, q) + p["D"][None, :, None] * v)
        kp, vp = k, v
    return np.stack(ys), dict(angle=phi, ssm=Sm, k=kp, v=pre["x"][-1].copy() if T else v0)


def scan_chunked_mimo(pre, p, state, chunk=8):
    """Chunked form of the MIMO scan, as mamba3_MIMO_chunk_ref (keys/queries of a chunk flattened over (token, rank),
    decay exp(segsum) per token pair, key scale lam_s DT_s + (1 - lam_{s+1}) DT_{s+1}, the over-counted
    (1 - lam_{t+1}) DT_{t+1} sum_r' (q_r . k_r') v_r' subtracted) but with a carried state (and an initial one)."""
    phi0, Sm, kp, v0 = (state[k].astype(np.float64).copy() for k in ("angle", "ssm", "k", "v"))
    mx = p["mimo_x"].transpose(1, 0, 2)
    vp = v0[None] * mx
    T, H, P = pre["x"].shape
    ys = []
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(T, c0 + chunk))
        DT, lam, ADT = pre["DT"][sl], pre["lam"][sl], pre["ADT"][sl]      # [L, H]
        L = DT.shape[0]
        v = pre["x"][sl][:, None] * mx[None]                              # [L, R, H, P]
        phi = phi0[None] + np.cumsum(pre["theta"][sl][:, None, :] * DT[:, :, None], axis=0)
        phi = phi - TWO_PI * np.floor(phi / TWO_PI)                        # [L, H, S]
        q, k = rotate_half(pre["Ct"][sl], phi[:, None]), rotate_half(pre["Bt"][sl], phi[:, None])   # [L, R, H, N]
        acc = Sm + ((1.0 - lam[0]) * DT[0])[:, None, None] * np.einsum("rhp,rhn->hpn", vp, kp)
        shift = np.zeros_like(DT)
        shift[:-1] = (1.0 - lam[1:]) * DT[1:]
        scale = lam * DT + shift
        cs = np.cumsum(ADT, axis=0)
        seg = cs[:, None, :] - cs[None, :, :]
        mask = np.tril(np.ones((L, L), bool))[:, :, None]
        decay = np.where(mask, np.exp(np.where(mask, seg, 0.0)), 0.0)    # [t, s, H]
        qk = np.einsum("tRhn,srhn->tRsrh", q, k) * (decay * scale[None])[:, None, :, None, :]
        y = np.einsum("tRsrh,srhp->tRhp", qk, v)
        y += np.einsum("hpn,tRhn->tRhp", acc, q) * np.exp(cs)[:, None, :, None]
        y -= np.einsum("tRhn,trhn,trhp->tRhp", q, k, v) * shift[:, None, :, None]
        y += p["D"][None, None, :, None] * v
        ys.append(y)
        w = np.exp(cs[-1][None, :] - cs) * scale
        Sm = np.exp(cs[-1])[:, None, None] * acc + np.einsum("sh,srhp,srhn->hpn", w, v, k)
        phi0, kp, vp = phi[-1], k[-1], v[-1]
    return np.concatenate(ys), dict(angle=phi0, ssm=Sm, k=kp, v=pre["x"][-1].copy())


def _finish_mimo(p, cfg, y, z):
    """y [T, R, H, P], z [T, H, P] -> out [T, d]: per rank gate (or head-wise norm + gate), mimo_o, out_proj."""
    T, R, H, P = y.shape
    zr = z[:, None] * p["mimo_z"].transpose(1, 0, 2)[None]
    if cfg.get("is_outproj_norm", False):
        y = rmsnorm(y, p["norm.weight"].reshape(H, P)) * silu(zr)
    else:
        y = y * silu(zr)
    y = np.einsum("trhp,hrp->thp", y, p["mimo_o"])
    return y.reshape(T, H * P) @ p["out_proj.weight"].T


def _finish(p, cfg, y, z):
    """y, z [T, H, P] -> out [T, d]: gate (or gated per-head RMSNorm), out_proj."""
    T, H, P = y.shape
    if cfg.get("is_outproj_norm", False):
        y = rmsnorm(y, p["norm.weight"].reshape(H, P)) * silu(z)
    else:
        y = y * silu(z)
    return y.reshape(T, H * P) @ p["out_proj.weight"].T


def mixer_forward(p, cfg, u, state=None, mode="sequential", chunk=8):
    """u [T, d] -> out [T, d], final state dict(angle [H,S], ssm [H,P,N], k [H,N], v [H,P])."""
    pre = preprocess(p, cfg, u)
    state = zero_state(cfg) if state is None else state
    if dims(cfg)["mimo"]:
        if mode == "sequential":
            y, st = scan_sequential_mimo(pre, p, state)
        else:
            y, st = scan_chunked_mimo(pre, p, state, chunk)
        return _finish_mimo(p, cfg, y, pre["z"]), st
    if mode == "sequential":
        y, st = scan_sequential(pre, p["D"], state)
    else:
        y, st = scan_chunked(pre, p["D"], state, chunk)
    return _finish(p, cfg, y, pre["z"]), st


def mixer_step(p, cfg, u_t, state):
    """u_t [d] -> out [d], new state (one token of the recurrence)."""
    out, st = mixer_forward(p, cfg, np.asarray(u_t)[None], state, "sequential")
    return out[0], st


def lm_forward(model, ids, states=None, mode="sequential"):
    """model = load_fixture(...) dict; ids [T] -> logits [T, V], per-layer final states (list)."""
    cfg, W = model["mixer_cfg"], model["weights"]
    r = W["backbone.embedding.weight"][np.asarray(ids)]
    h = np.zeros_like(r)
    out_states = []
    for i in range(model["n_layer"]):
        pre = f"backbone.layers.{i}."
        r = r + h
        mp = {k[len(pre) + 6:]: v for k, v in W.items() if k.startswith(pre + "mixer.")}
        h, st = mixer_forward(mp, cfg, rmsnorm(r, W[pre + "norm.weight"]),
                              None if states is None else states[i], mode)
        out_states.append(st)
    hf = rmsnorm(r + h, W["backbone.norm_f.weight"])
    return hf @ W["lm_head.weight"].T, out_states


def lm_logits(model, ids):
    return lm_forward(model, ids)[0]


def lm_step(model, token, states):
    logits, st = lm_forward(model, [token], states)
    return logits[0], st


def greedy(model, prompt_ids, n_new):
    """Prefill (forward), then n_new greedy tokens through the step path. Returns (prompt logits [T, V],
    new ids [n_new], logits of each greedy step [n_new, V] (row 0 = prompt's last row), final states)."""
    logits, states = lm_forward(model, prompt_ids)
    cur, ids, glog = logits[-1], [], []
    for i in range(n_new):
        glog.append(cur)
        tok = int(np.argmax(cur))
        ids.append(tok)
        if i + 1 < n_new:
            cur, states = lm_step(model, tok, states)
    return logits, np.array(ids, np.int64), np.stack(glog), states


def stack_states(states):
    return {f"{k}_state": np.stack([s[k] for s in states]) for k in ("angle", "ssm", "k", "v")}


def load_fixture(folder):
    """Folder with config.json (MambaLMHeadModel layout) + model.safetensors -> model dict, weights float64."""
    from safetensors.numpy import load_file
    folder = Path(folder)
    conf = json.loads((folder / "config.json").read_text())
    ssm = dict(conf["ssm_cfg"])
    assert ssm.pop("layer") == "Mamba3"
    W = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}
    if "lm_head.weight" not in W:
        W["lm_head.weight"] = W["backbone.embedding.weight"]
    return dict(config=conf, n_layer=conf["n_layer"], mixer_cfg=dict(ssm, d_model=conf["d_model"]), weights=W)
