"""Float64 numpy reference of Mamba-1 and Falcon-Mamba: forward, one-token step, and backward.

This is the oracle the WGSL kernels are tested against. Every op is written out with its shapes and
its math; nothing here is fast, everything here is float64. Pure numpy (no torch): the unit tests that
use it run without transformers; `tools/make_fixtures.py` produces the transformers-side fixtures.

Conventions
-----------
* Sequences are time-major, channels last: ``x[..., T, C]`` (optional leading batch dims ``...``).
* Linear weights are PyTorch layout ``W[out, in]``: ``y = x @ W.T + b``.
* ``d`` = hidden_size, ``I`` = intermediate_size (= expand * d), ``N`` = state_size,
  ``R`` = time_step_rank (dt_rank), ``K`` = conv_kernel, ``V`` = vocab_size, ``L`` = layers.
* Parameters are a dict keyed by the HuggingFace names (``backbone.layers.0.mixer.A_log`` ...).
  ``conv1d.weight`` is stored ``[I, 1, K]``; ops take it squeezed to ``[I, K]``.

Recurrent state (per layer), chosen to match transformers' cache exactly
-----------------------------------------------------------------------
* ``conv_state [I, K]``: the last K *pre-conv* inputs (the x half of in_proj), oldest in column 0,
  newest in column K-1; zero-filled on the left when fewer than K tokens were seen. This is what
  ``cache.get_conv_state(layer)[b]`` holds (``cache_utils.LinearAttentionLayer.update_conv_state``
  keeps ``full[..., -conv_kernel_size:]``; ``modeling_mamba.causal_conv1d_update`` rolls it). Note
  it is K wide, not K-1: column 0 is dead weight for the *next* step (the next output reads columns
  1..K-1 plus the new input), but it is what the cache stores, so fixtures and ``step`` use it.
* ``ssm_state [I, N]``: h after the last token (``cache.get_recurrent_state(layer)[b]``).

transformers code paths checked (transformers 5.23, ``.venv/lib/python3.11/site-packages/transformers``)
-----------------------------------------------------------------------------------------------------
There is no ``slow_forward`` any more in 5.x: ``MambaMixer.forward`` calls module-level functions
wrapped by ``use_kernel_func_from_hub_with_fallback``; with neither ``mamba_ssm``, ``causal_conv1d``
nor ``kernels`` installed, the wrapped torch bodies below run (the "slow path").
* ``models/mamba/modeling_mamba.py``
  - ``MambaRMSNorm.forward``: ``w * (x * rsqrt(mean(x^2) + eps))``, eps = ``layer_norm_epsilon``
    (block norm and ``norm_f``)                                            -> :func:`rmsnorm`
  - ``MambaBlock.forward``: ``residual + mixer(norm(h))``; ``residual_in_fp32`` only casts the
    residual to f32 (a no-op for f32 weights, and here everything is f64)   -> :func:`forward`
  - ``MambaMixer.forward``: ``in_proj`` -> ``chunk(2)`` = ``[x | z]`` (x first); conv + act
    (``hidden_act``, silu) on x; ``x_proj`` -> ``split([R, N, N])`` = ``[dt_low | B | C]``;
    ``dt_proj.weight @ dt_low`` *without* bias (bias passed as ``delta_bias``); ``out_proj``.
    ``self.training and cache_params is None`` tries ``mamba_inner_fn``, whose fallback returns None,
    so training uses the same path.                                          -> :func:`mixer_forward`
  - ``causal_conv1d_fn``: ``F.conv1d(x, w[I,1,K], b, padding=K-1, groups=I)[..., :T]`` -> :func:`causal_conv1d`
  - ``causal_conv1d_update``: ``cat([state, x])``, state <- last K, conv with padding 0, keep last
    output                                                                   -> :func:`causal_conv1d_step`
  - ``mamba_selective_scan`` (recurrent loop; ``use_mambapy`` False and the associative scan only
    under torch.compile): ``dt = softplus(dt + delta_bias)``, ``dA = exp(A * dt)``,
    ``dBu = dt * B * u`` (Euler for B), ``h = dA * h + dBu``, ``y = h @ C``, ``y += u * D``,
    ``y *= silu(z)``; h starts at zero                                       -> :func:`selective_scan`
  - ``mamba_selective_state_update``: the same for one token with a carried state
                                                                             -> :func:`selective_state_update`
  - ``A = -torch.exp(self.A_log.float())`` in ``MambaMixer.forward``.
  - ``MambaForCausalLM.forward``: ``lm_head(norm_f(h)).float()``; ``_tied_weights_keys`` ties
    ``lm_head.weight`` to ``backbone.embeddings.weight``; ``MambaModel.load_hook`` renames an old
    ``embedding.`` key to ``embeddings.`` (Mamba only, not Falcon).
* ``models/falcon_mamba/modeling_falcon_mamba.py`` (generated from ``modular_falcon_mamba.py``):
  identical to Mamba except ``FalconMambaMixer.forward``, right after the ``x_proj`` split and
  *before* ``dt_proj``: ``time_step = dt_layernorm(time_step)``, ``B = b_layernorm(B)``,
  ``C = c_layernorm(C)``. These are ``FalconMambaWeightlessRMSNorm`` (``x * rsqrt(mean(x^2) + eps)``
  over the last dim: R for dt_low, N for B and C), eps = ``config.mixer_rms_eps`` (default 1e-6),
  *not* ``layer_norm_epsilon``. Their ``weight`` buffers are non-persistent ones (never saved, never
  used on the torch path; dt_layernorm's buffer is even sized I while it normalises R values).
* ``models/mamba/configuration_mamba.py`` / ``falcon_mamba/configuration_falcon_mamba.py``:
  ``intermediate_size = int(expand * hidden_size)``; ``time_step_rank = ceil(hidden_size / 16)`` when
  "auto"; ``tie_word_embeddings`` defaults True; there is no ``pad_vocab_size_multiple`` field: an
  extra one is stored and ignored, ``vocab_size`` is taken as-is (checkpoints carry padded rows).
* ``cache_utils.py``: ``LinearAttentionLayer.update_conv_state`` (prefill: left-pads to K if T < K,
  keeps the last K columns), ``update_recurrent_state``.
* ``torch.nn.functional.softplus`` (beta 1, threshold 20): ``x > 20 ? x : log1p(exp(x))``;
  backward ``x > 20 ? g : g * sigmoid(x)``.
* ``loss/loss_utils.py`` ``ForCausalLMLoss``: labels padded right with -100 and shifted by one,
  ``cross_entropy(ignore_index=-100, reduction="mean")`` = mean over non-ignored targets.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100
SOFTPLUS_THRESHOLD = 20.0

# ----------------------------------------------------------------------------------------------
# Loading (pure numpy: safetensors parsed by hand so bf16 works without torch)
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def load_safetensors(path) -> dict:
    """Read a .safetensors file into ``{name: float64 array}`` (f32/f16/bf16/f64 widened exactly).

    Layout: u64 little-endian header length n, n bytes of JSON ``{name: {dtype, shape,
    data_offsets: [begin, end]}}`` (offsets relative to the end of the header), then the data.
    bf16 is the top half of an f32: ``f32_bits = u16 << 16``.
    """
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b : base + e]
        shape = tuple(info["shape"])
        dt = info["dtype"]
        if dt == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"))
        arr = arr.reshape(shape)
        out[name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr.copy()
    return out


class Config:
    """The handful of config.json fields the math needs (MambaConfig / FalconMambaConfig names)."""

    def __init__(self, d: dict):
        self.model_type = d.get("model_type", "mamba")
        if self.model_type not in ("mamba", "falcon_mamba"):
            raise ValueError(f"not a Mamba-1 config: model_type={self.model_type!r}")
        self.falcon = self.model_type == "falcon_mamba"
        self.d_model = int(d["hidden_size"])
        self.d_inner = int(d.get("intermediate_size") or int(d.get("expand", 2) * self.d_model))
        self.d_state = int(d.get("state_size", 16))
        r = d.get("time_step_rank", "auto")
        self.dt_rank = math.ceil(self.d_model / 16) if r == "auto" else int(r)
        self.d_conv = int(d.get("conv_kernel", 4))
        self.n_layer = int(d["num_hidden_layers"])
        self.vocab_size = int(d["vocab_size"])
        self.eps = float(d.get("layer_norm_epsilon", 1e-5))
        self.mixer_rms_eps = float(d.get("mixer_rms_eps", 1e-6))
        self.tie = bool(d.get("tie_word_embeddings", True))
        self.use_conv_bias = bool(d.get("use_conv_bias", True))
        self.use_bias = bool(d.get("use_bias", False))
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"hidden_act={act!r} (only silu)")


def load_model(folder):
    """``(Config, params)`` from a HF folder (config.json + model.safetensors), params float64."""
    folder = Path(folder)
    cfg = Config(json.loads((folder / "config.json").read_text()))
    params = load_safetensors(folder / "model.safetensors")
    return cfg, normalize_params(cfg, params)


def normalize_params(cfg: Config, params: dict) -> dict:
    """Old ``backbone.embedding.weight`` -> ``embeddings`` (MambaModel.load_hook); tie the head."""
    p = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in params.items()}
    if cfg.tie:
        # transformers ties lm_head to the embedding whatever the file holds
        p["lm_head.weight"] = p["backbone.embeddings.weight"]
    return p


# ----------------------------------------------------------------------------------------------
# Elementwise
# ----------------------------------------------------------------------------------------------


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), written to not overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x):
    """softplus(x) = x if x > 20 else log1p(exp(x))   (torch: beta=1, threshold=20)."""
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))


def softplus_backward(dy, x):
    """d softplus / dx = 1 if x > 20 else sigmoid(x)."""
    return dy * np.where(x > SOFTPLUS_THRESHOLD, 1.0, sigmoid(x))


def silu(x):
    """silu(x) = x * sigmoid(x)."""
    return x * sigmoid(x)


def silu_backward(dy, x):
    """d silu / dx = s + x s (1 - s) = s (1 + x (1 - s)),  s = sigmoid(x)."""
    s = sigmoid(x)
    return dy * s * (1.0 + x * (1.0 - s))


# ----------------------------------------------------------------------------------------------
# RMSNorm, Linear, Embedding
# ----------------------------------------------------------------------------------------------


def rmsnorm(x, w=None, eps=1e-5):
    """x [..., D], w [D] or None (weightless, Falcon's B/C/dt norms) -> [..., D]

    r = 1 / sqrt(mean_j x_j^2 + eps);  y = x * r * w
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    y = x * r
    return y if w is None else y * w


def rmsnorm_backward(dy, x, w=None, eps=1e-5):
    """-> (dx [..., D], dw [D] or None)

    xhat = x r;  g = dy * w;  dw = sum_{...} dy * xhat
    dx = r * (g - xhat * mean_j(g_j xhat_j))      (since d r / d x_i = -r^3 x_i / D)
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * r
    g = dy if w is None else dy * w
    dx = r * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    dw = None if w is None else (dy * xhat).reshape(-1, x.shape[-1]).sum(0)
    return dx, dw


def linear(x, W, b=None):
    """x [..., in], W [out, in], b [out] -> y [..., out] = x @ W.T + b"""
    y = x @ W.T
    return y if b is None else y + b


def linear_backward(dy, x, W, has_bias=False):
    """-> (dx [..., in] = dy @ W,  dW [out, in] = sum_{...} dy^T x,  db [out] = sum_{...} dy or None)"""
    dx = dy @ W
    dy2 = dy.reshape(-1, W.shape[0])
    x2 = x.reshape(-1, W.shape[1])
    dW = dy2.T @ x2
    db = dy2.sum(0) if has_bias else None
    return dx, dW, db


def embedding(ids, E):
    """ids [...] int, E [V, d] -> [..., d] = E[ids]"""
    return E[np.asarray(ids)]


def embedding_backward(dy, ids, V):
    """dE [V, d]: dE[v] = sum over positions p with ids[p] == v of dy[p]  (scatter-add)."""
    ids = np.asarray(ids).reshape(-1)
    dE = np.zeros((V, dy.shape[-1]))
    np.add.at(dE, ids, dy.reshape(-1, dy.shape[-1]))
    return dE


# ----------------------------------------------------------------------------------------------
# Depthwise causal conv1d
# ----------------------------------------------------------------------------------------------


def _conv_pad(x, K, left=None):
    """xp [..., K-1+T, I]: `left` [..., K-1, I] (previous inputs) or zeros, then x."""
    if left is None:
        left = np.zeros(x.shape[:-2] + (K - 1, x.shape[-1]))
    return np.concatenate([left, x], axis=-2)


def causal_conv1d(x, w, b=None, left=None):
    """x [..., T, I], w [I, K] (torch [I,1,K] squeezed), b [I] or None, left [..., K-1, I] or None
    -> y [..., T, I]   (no activation)

    torch: F.conv1d(x^T, w[I,1,K], b, padding=K-1, groups=I)[..., :T]  (cross-correlation):
        y[t, i] = b[i] + sum_{k=0}^{K-1} w[i, k] * xp[t + k, i],   xp[s] = x[s - (K-1)], 0 before 0
    i.e. w[i, K-1] multiplies the current input and w[i, 0] the one K-1 steps back.
    """
    K = w.shape[-1]
    T = x.shape[-2]
    xp = _conv_pad(x, K, left)
    y = np.zeros(x.shape)
    for k in range(K):
        y += w[:, k] * xp[..., k : k + T, :]
    return y if b is None else y + b


def causal_conv1d_backward(dy, x, w, has_bias=True, left=None):
    """-> (dx [..., T, I], dw [I, K], db [I] or None, dleft [..., K-1, I])

    dxp[t + k, i] += dy[t, i] w[i, k];  dw[i, k] = sum_t dy[t, i] xp[t + k, i];  db = sum_t dy
    """
    K = w.shape[-1]
    T = x.shape[-2]
    xp = _conv_pad(x, K, left)
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for k in range(K):
        dxp[..., k : k + T, :] += dy * w[:, k]
        dw[:, k] = (dy * xp[..., k : k + T, :]).reshape(-1, w.shape[0]).sum(0)
    db = dy.reshape(-1, w.shape[0]).sum(0) if has_bias else None
    return dxp[..., K - 1 :, :], dw, db, dxp[..., : K - 1, :]


def causal_conv1d_step(x_t, conv_state, w, b=None):
    """x_t [..., I], conv_state [..., I, K] (last K inputs, newest last), w [I, K]
    -> (y_t [..., I], new conv_state [..., I, K])      (transformers causal_conv1d_update)

    state <- roll(state, -1); state[:, K-1] = x_t;  y_t[i] = b[i] + sum_k state[i, k] * w[i, k]
    """
    s = np.concatenate([conv_state[..., 1:], x_t[..., None]], axis=-1)
    y = np.sum(s * w, axis=-1)
    return (y if b is None else y + b), s


def conv_state_from_inputs(x, K, prev_state=None):
    """conv_state [..., I, K] after feeding x [..., T, I]: the last K inputs (zero-padded left),
    continuing prev_state [..., I, K] if given (transformers update_conv_state)."""
    if prev_state is None:
        prev = np.zeros(x.shape[:-2] + (K, x.shape[-1]))
    else:
        prev = np.swapaxes(prev_state, -1, -2)
    full = np.concatenate([prev, x], axis=-2)
    return np.swapaxes(full[..., -K:, :], -1, -2).copy()


# ----------------------------------------------------------------------------------------------
# Selective scan (Mamba-1: ZOH for A, Euler for B)
# ----------------------------------------------------------------------------------------------


def selective_scan(u, delta, A_log, B, C, D, z=None, delta_bias=None, h0=None, return_states=False):
    """Sequence form (transformers mamba_selective_scan / state-spaces selective_scan_ref).

    u [..., T, I]      input (conv + silu output)
    delta [..., T, I]  dt_proj.weight @ dt_low, *without* bias
    A_log [I, N], B [..., T, N], C [..., T, N], D [I], z [..., T, I] or None, delta_bias [I] or None
    h0 [..., I, N] or None (zeros)
    -> y [..., T, I], h_T [..., I, N]   (+ all states [..., T, I, N] if return_states)

        A   = -exp(A_log)                              [I, N]
        dt  = softplus(delta + delta_bias)              [T, I]
        dA  = exp(dt[:, :, None] * A)                   [T, I, N]
        h_t = dA_t * h_{t-1} + dt_t[:, None] * B_t[None, :] * u_t[:, None]     [I, N]
        y_t = h_t @ C_t + D * u_t                       [I]
        y_t = y_t * silu(z_t)
    """
    A = -np.exp(A_log)
    dt = softplus(delta if delta_bias is None else delta + delta_bias)
    T = u.shape[-2]
    I, N = A.shape
    h = np.zeros(u.shape[:-2] + (I, N)) if h0 is None else np.array(h0, dtype=np.float64)
    ys = np.zeros(u.shape)
    hs = np.zeros(u.shape[:-2] + (T, I, N)) if return_states else None
    for t in range(T):
        dt_t = dt[..., t, :, None]  # [..., I, 1]
        h = np.exp(dt_t * A) * h + dt_t * B[..., t, None, :] * u[..., t, :, None]
        ys[..., t, :] = np.einsum("...in,...n->...i", h, C[..., t, :])
        if return_states:
            hs[..., t, :, :] = h
    y = ys + D * u
    if z is not None:
        y = y * silu(z)
    return (y, h, hs) if return_states else (y, h)


def selective_state_update(h, u_t, delta_t, A_log, B_t, C_t, D, z_t=None, delta_bias=None):
    """One token (transformers mamba_selective_state_update).

    h [..., I, N], u_t [..., I], delta_t [..., I] (no bias), B_t/C_t [..., N], z_t [..., I]
    -> (y_t [..., I], new h [..., I, N]);  same formulas as selective_scan for one t.
    """
    A = -np.exp(A_log)
    dt = softplus(delta_t if delta_bias is None else delta_t + delta_bias)[..., None]  # [..., I, 1]
    h = np.exp(dt * A) * h + dt * B_t[..., None, :] * u_t[..., :, None]
    y = np.einsum("...in,...n->...i", h, C_t) + D * u_t
    if z_t is not None:
        y = y * silu(z_t)
    return y, h


def selective_scan_backward(dy, u, delta, A_log, B, C, D, z=None, delta_bias=None, h0=None, dh_last=None):
    """Reverse mode of :func:`selective_scan`. dy [..., T, I]; dh_last [..., I, N] (grad flowing
    into the final state, e.g. from a later chunk) or None.

    Returns dict: du, ddelta (grad of the pre-bias delta), ddelta_bias [I], dA_log [I, N],
    dB, dC [..., T, N], dD [I], dz [..., T, I] (None if z is None), dh0 [..., I, N].

    With y0_t = h_t @ C_t + D u_t and y_t = y0_t * silu(z_t), going t = T-1 .. 0 with
    g = dL/dh_t (starts at dh_last):
        dy0_t  = dy_t * silu(z_t);      dz_t = dy_t * y0_t * silu'(z_t)
        dD    += dy0_t * u_t;           du_t = dy0_t * D
        g     += dy0_t[:, None] * C_t[None, :];         dC_t = sum_i dy0_t[i] h_t[i, :]
        ddt_t  = sum_n g * (dA_t * A * h_{t-1} + B_t * u_t)
        dA    += g * dA_t * dt_t * h_{t-1}
        dB_t   = sum_i g * dt_t * u_t;  du_t += sum_n g * dt_t * B_t
        g      = g * dA_t                                   (-> dL/dh_{t-1})
    then dA_log = dA * A (A = -exp(A_log)), ddelta = softplus'(delta + bias) * ddt, dh0 = g.
    """
    A = -np.exp(A_log)
    xb = delta if delta_bias is None else delta + delta_bias
    dt = softplus(xb)
    T = u.shape[-2]
    I, N = A.shape
    y_ssm, _, hs = selective_scan(u, delta, A_log, B, C, np.zeros_like(D), None, delta_bias, h0, return_states=True)
    y0 = y_ssm + D * u
    if z is not None:
        dy0 = dy * silu(z)
        dz = silu_backward(dy * y0, z)
    else:
        dy0 = dy
        dz = None
    batch = u.shape[:-2]
    hprev_all = np.concatenate(
        [(np.zeros(batch + (1, I, N)) if h0 is None else np.asarray(h0)[..., None, :, :]), hs[..., :-1, :, :]],
        axis=-3,
    )
    du = dy0 * D
    dD = (dy0 * u).reshape(-1, I).sum(0)
    dB = np.zeros(B.shape)
    dC = np.zeros(C.shape)
    ddt = np.zeros(u.shape)
    dA = np.zeros((I, N))
    g = np.zeros(batch + (I, N)) if dh_last is None else np.array(dh_last, dtype=np.float64)
    for t in range(T - 1, -1, -1):
        h_t = hs[..., t, :, :]
        hp = hprev_all[..., t, :, :]
        dt_t = dt[..., t, :, None]  # [..., I, 1]
        dA_t = np.exp(dt_t * A)  # [..., I, N]
        dC[..., t, :] = np.einsum("...i,...in->...n", dy0[..., t, :], h_t)
        g = g + dy0[..., t, :, None] * C[..., t, None, :]
        Bt = B[..., t, None, :]
        ut = u[..., t, :, None]
        ddt[..., t, :] = np.sum(g * (dA_t * A * hp + Bt * ut), axis=-1)
        dA += (g * dA_t * dt_t * hp).reshape(-1, I, N).sum(0)
        dB[..., t, :] = np.sum(g * dt_t * ut, axis=-2)
        du[..., t, :] += np.sum(g * dt_t * Bt, axis=-1)
        g = g * dA_t
    ddelta = softplus_backward(ddt, xb)
    return {
        "du": du,
        "ddelta": ddelta,
        "ddelta_bias": ddelta.reshape(-1, I).sum(0) if delta_bias is not None else None,
        "dA_log": dA * A,
        "dB": dB,
        "dC": dC,
        "dD": dD,
        "dz": dz,
        "dh0": g,
    }


# ----------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------


def log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX):
    """logits [..., V], targets [...] int -> (mean loss, dlogits [..., V])

    loss = (1/n) sum_{p: targets[p] != ignore} (logsumexp(logits[p]) - logits[p, targets[p]])
    dlogits[p] = (softmax(logits[p]) - onehot(targets[p])) / n for valid p, 0 for ignored.
    n = number of valid targets (torch cross_entropy reduction="mean"; 0/0 = nan if none).
    """
    V = logits.shape[-1]
    lg = logits.reshape(-1, V)
    tg = np.asarray(targets).reshape(-1)
    valid = tg != ignore_index
    n = int(valid.sum())
    lsm = log_softmax(lg)
    safe = np.where(valid, tg, 0)
    nll = -lsm[np.arange(len(tg)), safe]
    loss = float(np.sum(np.where(valid, nll, 0.0)) / n) if n else float("nan")
    d = np.exp(lsm)
    d[np.arange(len(tg)), safe] -= 1.0
    d = np.where(valid[:, None], d, 0.0) / max(n, 1)
    return loss, d.reshape(logits.shape)


def causal_lm_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """HF ForCausalLMLoss: position t predicts labels[t+1]; the last position has no target.
    logits [..., T, V], labels [..., T] -> (loss, dlogits [..., T, V])."""
    labels = np.asarray(labels)
    pad = np.full(labels.shape[:-1] + (1,), ignore_index, dtype=labels.dtype)
    shifted = np.concatenate([labels[..., 1:], pad], axis=-1)
    return cross_entropy(logits, shifted, ignore_index)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def _layer(params, i):
    pre = f"backbone.layers.{i}."
    return {k[len(pre) :]: v for k, v in params.items() if k.startswith(pre)}


def init_state(cfg: Config, batch=()):
    """Per-layer zero state: list of (conv_state [..., I, K], ssm_state [..., I, N])."""
    return [
        (np.zeros(tuple(batch) + (cfg.d_inner, cfg.d_conv)), np.zeros(tuple(batch) + (cfg.d_inner, cfg.d_state)))
        for _ in range(cfg.n_layer)
    ]


def mixer_forward(p, cfg: Config, x, state=None):
    """One mixer over a sequence. p = layer params ('mixer.in_proj.weight', ...); x [..., T, d]
    (already normed); state = (conv_state [..., I, K], ssm_state [..., I, N]) or None.
    -> (out [..., T, d], new state, tape for mixer_backward)

        xz       = in_proj(x)                        [T, 2I];  xc = xz[:, :I], z = xz[:, I:]
        c        = causal_conv1d(xc, w, b)           [T, I];   u = silu(c)
        xdbl     = x_proj(u)                         [T, R+2N] = [dt_low | B | C]
        (Falcon) dt_low, B, C = rmsnorm(dt_low), rmsnorm(B), rmsnorm(C)   weightless, mixer_rms_eps
        delta    = dt_low @ dt_proj.weight.T         [T, I]    (bias goes into the scan)
        y, h     = selective_scan(u, delta, A_log, B, C, D, z, dt_proj.bias)
        out      = out_proj(y)                       [T, d]
    """
    I, N, R, K = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    m = "mixer."
    conv_w = p[m + "conv1d.weight"].reshape(I, K)
    conv_b = p.get(m + "conv1d.bias") if cfg.use_conv_bias else None
    in_b = p.get(m + "in_proj.bias") if cfg.use_bias else None
    out_b = p.get(m + "out_proj.bias") if cfg.use_bias else None
    conv_state, h0 = (None, None) if state is None else state
    left = None if conv_state is None else np.swapaxes(conv_state[..., 1:], -1, -2)  # [..., K-1, I]

    xz = linear(x, p[m + "in_proj.weight"], in_b)
    xc, z = xz[..., :I], xz[..., I:]
    c = causal_conv1d(xc, conv_w, conv_b, left)
    u = silu(c)
    xdbl = linear(u, p[m + "x_proj.weight"])
    dt_low_raw, B_raw, C_raw = xdbl[..., :R], xdbl[..., R : R + N], xdbl[..., R + N :]
    if cfg.falcon:
        e = cfg.mixer_rms_eps
        dt_low, B, C = rmsnorm(dt_low_raw, None, e), rmsnorm(B_raw, None, e), rmsnorm(C_raw, None, e)
    else:
        dt_low, B, C = dt_low_raw, B_raw, C_raw
    delta = linear(dt_low, p[m + "dt_proj.weight"])
    y, h = selective_scan(u, delta, p[m + "A_log"], B, C, p[m + "D"], z, p[m + "dt_proj.bias"], h0)
    out = linear(y, p[m + "out_proj.weight"], out_b)
    new_state = (conv_state_from_inputs(xc, K, conv_state), h)
    tape = dict(x=x, xc=xc, z=z, c=c, u=u, dt_low_raw=dt_low_raw, B_raw=B_raw, C_raw=C_raw,
                dt_low=dt_low, B=B, C=C, delta=delta, y=y, left=left, h0=h0)
    return out, new_state, tape


def mixer_step(p, cfg: Config, x_t, state):
    """One mixer, one token: x_t [..., d], state (conv_state [..., I, K], ssm_state [..., I, N])
    -> (out_t [..., d], new state). Same math as mixer_forward with T = 1, using
    causal_conv1d_step and selective_state_update."""
    I, N, R, K = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    m = "mixer."
    conv_state, h = state
    xz = linear(x_t, p[m + "in_proj.weight"], p.get(m + "in_proj.bias") if cfg.use_bias else None)
    xc, z = xz[..., :I], xz[..., I:]
    c, conv_state = causal_conv1d_step(
        xc, conv_state, p[m + "conv1d.weight"].reshape(I, K), p.get(m + "conv1d.bias") if cfg.use_conv_bias else None
    )
    u = silu(c)
    xdbl = linear(u, p[m + "x_proj.weight"])
    dt_low, B, C = xdbl[..., :R], xdbl[..., R : R + N], xdbl[..., R + N :]
    if cfg.falcon:
        e = cfg.mixer_rms_eps
        dt_low, B, C = rmsnorm(dt_low, None, e), rmsnorm(B, None, e), rmsnorm(C, None, e)
    delta = linear(dt_low, p[m + "dt_proj.weight"])
    y, h = selective_state_update(h, u, delta, p[m + "A_log"], B, C, p[m + "D"], z, p[m + "dt_proj.bias"])
    out = linear(y, p[m + "out_proj.weight"], p.get(m + "out_proj.bias") if cfg.use_bias else None)
    return out, (conv_state, h)


def forward(params, cfg: Config, ids, state=None, return_tape=False):
    """ids [T] or [B, T] int -> (logits [..., T, V], new state [per layer (conv [..., I, K], ssm [..., I, N])])

        h = E[ids];  for each layer: h = h + mixer(rmsnorm(h, norm.weight, eps))
        logits = rmsnorm(h, norm_f.weight, eps) @ lm_head.weight.T
    With `state`, continues a previous forward/step (conv left context + h0).
    """
    ids = np.asarray(ids)
    h = embedding(ids, params["backbone.embeddings.weight"])
    new_state, tapes = [], []
    for i in range(cfg.n_layer):
        p = _layer(params, i)
        hn = rmsnorm(h, p["norm.weight"], cfg.eps)
        out, st, tape = mixer_forward(p, cfg, hn, None if state is None else state[i])
        tapes.append(dict(h_in=h, mixer=tape))
        h = h + out
        new_state.append(st)
    hf = rmsnorm(h, params["backbone.norm_f.weight"], cfg.eps)
    logits = linear(hf, params["lm_head.weight"])
    if return_tape:
        return logits, new_state, dict(ids=ids, layers=tapes, h_last=h, hf=hf)
    return logits, new_state


def step(params, cfg: Config, token, state):
    """token int (or [B] ints), state per layer -> (logits [..., V], new state). Recurrent decode."""
    h = embedding(np.asarray(token), params["backbone.embeddings.weight"])
    new_state = []
    for i in range(cfg.n_layer):
        p = _layer(params, i)
        out, st = mixer_step(p, cfg, rmsnorm(h, p["norm.weight"], cfg.eps), state[i])
        h = h + out
        new_state.append(st)
    return linear(rmsnorm(h, params["backbone.norm_f.weight"], cfg.eps), params["lm_head.weight"]), new_state


def generate_greedy(params, cfg: Config, prompt_ids, n_new):
    """Prefill with forward, then n_new argmax tokens with step (no EOS stop). -> (new ids, step logits)."""
    logits, state = forward(params, cfg, prompt_ids)
    last = logits[-1]
    out, all_logits = [], []
    for _ in range(n_new):
        tok = int(np.argmax(last))
        out.append(tok)
        all_logits.append(last)
        last, state = step(params, cfg, tok, state)
    return np.array(out, dtype=np.int64), np.stack(all_logits)


def mixer_backward(dout, p, cfg: Config, tape):
    """Reverse of mixer_forward. dout [..., T, d] -> (dx [..., T, d], grads {layer-relative name: array}).
    (Gradients into an incoming state are not propagated: training starts from a zero state.)"""
    I, N, R, K = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    m = "mixer."
    t = tape
    g = {}
    dy, g[m + "out_proj.weight"], db = linear_backward(dout, t["y"], p[m + "out_proj.weight"], cfg.use_bias)
    if cfg.use_bias:
        g[m + "out_proj.bias"] = db
    s = selective_scan_backward(dy, t["u"], t["delta"], p[m + "A_log"], t["B"], t["C"], p[m + "D"], t["z"],
                                p[m + "dt_proj.bias"], t["h0"])
    g[m + "A_log"], g[m + "D"], g[m + "dt_proj.bias"] = s["dA_log"], s["dD"], s["ddelta_bias"]
    d_dt_low, g[m + "dt_proj.weight"], _ = linear_backward(s["ddelta"], t["dt_low"], p[m + "dt_proj.weight"])
    dB, dC = s["dB"], s["dC"]
    if cfg.falcon:
        e = cfg.mixer_rms_eps
        d_dt_low = rmsnorm_backward(d_dt_low, t["dt_low_raw"], None, e)[0]
        dB = rmsnorm_backward(dB, t["B_raw"], None, e)[0]
        dC = rmsnorm_backward(dC, t["C_raw"], None, e)[0]
    dxdbl = np.concatenate([d_dt_low, dB, dC], axis=-1)
    du2, g[m + "x_proj.weight"], _ = linear_backward(dxdbl, t["u"], p[m + "x_proj.weight"])
    du = s["du"] + du2
    dc = silu_backward(du, t["c"])
    dxc, dw, dcb, _ = causal_conv1d_backward(dc, t["xc"], p[m + "conv1d.weight"].reshape(I, K), cfg.use_conv_bias,
                                             t["left"])
    g[m + "conv1d.weight"] = dw.reshape(I, 1, K)
    if cfg.use_conv_bias:
        g[m + "conv1d.bias"] = dcb
    dxz = np.concatenate([dxc, s["dz"]], axis=-1)
    dx, g[m + "in_proj.weight"], db = linear_backward(dxz, t["x"], p[m + "in_proj.weight"], cfg.use_bias)
    if cfg.use_bias:
        g[m + "in_proj.bias"] = db
    return dx, g


def backward(params, cfg: Config, tape, dlogits):
    """Reverse of forward. dlogits [..., T, V] -> {HF name: grad}. A tied head's gradient is added
    into backbone.embeddings.weight (and lm_head.weight is not reported)."""
    grads = {}
    dhf, dhead, _ = linear_backward(dlogits, tape["hf"], params["lm_head.weight"])
    dh, grads["backbone.norm_f.weight"] = rmsnorm_backward(dhf, tape["h_last"], params["backbone.norm_f.weight"], cfg.eps)
    for i in range(cfg.n_layer - 1, -1, -1):
        p = _layer(params, i)
        lt = tape["layers"][i]
        dhn, gm = mixer_backward(dh, p, cfg, lt["mixer"])
        dh_in, gnorm = rmsnorm_backward(dhn, lt["h_in"], p["norm.weight"], cfg.eps)
        dh = dh + dh_in  # residual
        pre = f"backbone.layers.{i}."
        grads[pre + "norm.weight"] = gnorm
        for k, v in gm.items():
            grads[pre + k] = v
    dE = embedding_backward(dh, tape["ids"], cfg.vocab_size)
    if cfg.tie:
        grads["backbone.embeddings.weight"] = dE + dhead
    else:
        grads["backbone.embeddings.weight"] = dE
        grads["lm_head.weight"] = dhead
    return grads


def loss_and_grads(params, cfg: Config, ids, labels=None):
    """Mean next-token cross-entropy (HF labels semantics, labels default = ids) and its gradient
    for every parameter by HF name."""
    ids = np.asarray(ids)
    labels = ids if labels is None else np.asarray(labels)
    logits, _, tape = forward(params, cfg, ids, return_tape=True)
    loss, dlogits = causal_lm_loss(logits, labels)
    return loss, backward(params, cfg, tape, dlogits)


def loss_only(params, cfg: Config, ids, labels=None):
    ids = np.asarray(ids)
    return causal_lm_loss(forward(params, cfg, ids)[0], ids if labels is None else labels)[0]


# ----------------------------------------------------------------------------------------------
# AdamW (torch.optim.AdamW semantics, decoupled weight decay)
# ----------------------------------------------------------------------------------------------

DECAY_SUFFIXES = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight",
                  "out_proj.weight")


def decays(name):
    """Weight decay only on the 2-D weight matrices (embedding, head, in/x/dt/out proj); not on
    conv1d.weight, biases, norms, A_log (2-D but excluded), D."""
    return name.endswith(DECAY_SUFFIXES)


def adamw_step(params, grads, m, v, step_no, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """In-place torch.optim.AdamW step (step_no counts from 1), for every name in grads:
        p *= 1 - lr * wd            (only where decays(name))
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    b1, b2 = betas
    tied = params.get("lm_head.weight") is params.get("backbone.embeddings.weight") and "lm_head.weight" not in grads
    for k, gk in grads.items():
        if k not in m:
            m[k] = np.zeros_like(gk)
            v[k] = np.zeros_like(gk)
        p = params[k]
        if decays(k) and weight_decay:
            p = p * (1.0 - lr * weight_decay)
        m[k] = b1 * m[k] + (1 - b1) * gk
        v[k] = b2 * v[k] + (1 - b2) * gk * gk
        bc1 = 1 - b1**step_no
        bc2 = 1 - b2**step_no
        denom = np.sqrt(v[k]) / math.sqrt(bc2) + eps
        params[k] = p - (lr / bc1) * m[k] / denom
    if tied:
        params["lm_head.weight"] = params["backbone.embeddings.weight"]
    return params
