"""Float64 numpy reference of the whole Mamba-1 / Falcon-Mamba model: loading, forward, one-token
step, greedy generation, backward and loss. It composes the per-op references, one file per
kernel family: elementwise_numpy, rmsnorm_numpy, linear_numpy, embedding_numpy, conv1d_numpy,
selective_scan_numpy, cross_entropy_numpy (and adamw_numpy for the optimiser).

This is the oracle the engine is tested against. Nothing here is fast, everything here is float64.
Pure numpy (no torch): the unit tests that use it run without transformers;
`tools/make_fixtures.py` produces the transformers-side fixtures.

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
    (block norm and ``norm_f``)                                            -> rmsnorm_numpy
  - ``MambaBlock.forward``: ``residual + mixer(norm(h))``; ``residual_in_fp32`` only casts the
    residual to f32 (a no-op for f32 weights, and here everything is f64)   -> :func:`forward`
  - ``MambaMixer.forward``: ``in_proj`` -> ``chunk(2)`` = ``[x | z]`` (x first); conv + act
    (``hidden_act``, silu) on x; ``x_proj`` -> ``split([R, N, N])`` = ``[dt_low | B | C]``;
    ``dt_proj.weight @ dt_low`` *without* bias (bias passed as ``delta_bias``); ``out_proj``.
    ``self.training and cache_params is None`` tries ``mamba_inner_fn``, whose fallback returns None,
    so training uses the same path.                                          -> :func:`mixer_forward`
  - ``causal_conv1d_fn`` / ``causal_conv1d_update``                -> conv1d_numpy
  - ``mamba_selective_scan`` / ``mamba_selective_state_update``    -> selective_scan_numpy
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
* softplus / SiLU -> elementwise_numpy; ``ForCausalLMLoss`` -> cross_entropy_numpy.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from tests.reference.conv1d_numpy import (causal_conv1d, causal_conv1d_backward, causal_conv1d_step,
                                          conv_state_from_inputs)
from tests.reference.cross_entropy_numpy import causal_lm_loss
from tests.reference.elementwise_numpy import silu, silu_backward
from tests.reference.embedding_numpy import embedding, embedding_backward
from tests.reference.linear_numpy import linear, linear_backward
from tests.reference.rmsnorm_numpy import rmsnorm, rmsnorm_backward
from tests.reference.selective_scan_numpy import (selective_scan, selective_scan_backward,
                                                  selective_state_update)

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
