"""Causal self-attention with grouped-query heads (NemotronH's attention block).

Shapes: Bsz sequences of T tokens; activations are [Bsz*T, C] row-major.
  D d_model, H query heads, KVH key/value heads (head h reads kv head h // (H/KVH)), Dh head dim.
  h [Bsz*T, D] --q_proj--> q [.., H*Dh]   --k_proj--> k [.., KVH*Dh]   --v_proj--> v [.., KVH*Dh]
  cfg.attention_rope: q, k <- RoPE(q, k) at each token's position (py_engine/ops/rope.py; Llama's
  rotate_half convention, the first rot = int(Dh * partial_rotary_factor) (even) channels of each
  head, base rope_theta); positions 0.. in training, tokens_seen.. in a cached prefill, the
  GPU-side pos in a decode step -- before the step writes k, so the cache holds rotated keys.
  o_t = softmax_s<=t(q_t . k_s * Dh^-0.5) v_s   (py_engine/ops/attention.py, online softmax)
  residual + o @ o_proj^T
NemotronH uses no rotary embedding (attention_rope False). State (decode): the KV cache k, v
[Bsz, KVH, Tmax, Dh], written at the GPU-side position (ModelState.pos), so the recorded step
replays unchanged.

HF tensors (relative to backbone.layers.{i}.mixer.): q_proj.weight [H*Dh, D], k_proj.weight
[KVH*Dh, D], v_proj.weight [KVH*Dh, D], o_proj.weight [D, H*Dh], each followed by its .bias
with attention_qkv_bias / attention_out_bias (transformers' NemotronH attention has none).
mamba_ssm's MHA (checkpoint_layout "mamba_ssm", py_engine/models/mamba_ssm_config.py) fuses
them: in_proj.weight [(H+2*KVH)*Dh, D] rows [q | k | v] (+ in_proj.bias, qkv_proj_bias),
out_proj.weight [D, H*Dh] (+ out_proj.bias); in_proj becomes the GPU pieces in_proj.weight#q /
#k / #v (row blocks, so each projection is a plain matrix).
Decode dispatches per layer: norm 1, q|k|v 1 (one matvec over three weights; 3 with biases),
attention step (see ops/attention.py), o_proj accumulating into the residual 1; with RoPE + 2.
"""
import math
from dataclasses import dataclass

from py_engine.autograd import attention as A
from py_engine.autograd import functional as F
from py_engine.gpu.tensor import Tensor
from py_engine.nn.registry import LayerKind, register, whole
from py_engine.ops.attention import attention_step
from py_engine.ops.linear import linear_accumulate, linear_forward, linear_multi
from py_engine.ops.rope import MAX_ROT, rope_apply, rotary_dim


@dataclass(frozen=True)
class AttentionSpec:
    D: int
    H: int
    KVH: int
    Dh: int
    max_tokens: int     # default KV-cache length (max_position_embeddings)
    rope: bool = False  # rotary position embedding on q and k
    rot: int = 0        # rotated channels per head (even; 0 without rope)
    theta: float = 10000.0


def spec(cfg):
    rope = bool(cfg.attention_rope)
    return AttentionSpec(D=cfg.hidden_size, H=cfg.attention_heads, KVH=cfg.attention_kv_heads,
                         Dh=cfg.attention_head_dim, max_tokens=cfg.max_position_embeddings,
                         rope=rope, theta=float(cfg.rope_theta),
                         rot=rotary_dim(cfg.attention_head_dim, cfg.partial_rotary_factor)
                         if rope else 0)


def piece_names(cfg):
    """{role: GPU piece name relative to the layer's mixer.} for q, k, v, o and their biases."""
    if cfg.checkpoint_layout == "mamba_ssm":
        out = {r: f"in_proj.weight#{r}" for r in "qkv"}
        out.update({"b" + r: f"in_proj.bias#{r}" for r in "qkv"})
        out.update(o="out_proj.weight", bo="out_proj.bias")
        return out
    out = {r: f"{r}_proj.weight" for r in "qkvo"}
    out.update({"b" + r: f"{r}_proj.bias" for r in "qkvo"})
    return out


class AttentionMixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda role: weights.get(prefix + names[role])  # noqa: E731
        names = piece_names(cfg)
        self.spec = spec(cfg)
        self.wq, self.wk, self.wv, self.wo = w("q"), w("k"), w("v"), w("o")
        self.bq, self.bk, self.bv, self.bo = w("bq"), w("bk"), w("bv"), w("bo")
        self.kw = dict(n_heads=self.spec.H, n_kv_heads=self.spec.KVH)
        s = self.spec
        self.rope_kw = dict(head_dim=s.Dh, rot_dim=s.rot, theta=s.theta)

    @property
    def qkv_unbiased(self):
        """None of q, k, v has a bias: the paths that multiply all three at once take none."""
        return self.bq is None and self.bk is None and self.bv is None

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        if self.qkv_unbiased:   # one GEMM on a GPU
            q, k, v = F.linear_many(ctx, h, [self.wq, self.wk, self.wv])
        else:
            q = F.linear(ctx, h, self.wq, self.bq)         # [Bsz*T, H*Dh]
            k = F.linear(ctx, h, self.wk, self.bk)         # [Bsz*T, KVH*Dh]
            v = F.linear(ctx, h, self.wv, self.bv)
        if self.spec.rope:
            start = state.tokens_seen if state is not None else 0
            q0, k0 = q, k
            q = A.rope(ctx, q0, n_heads=self.spec.H, Bsz=Bsz, T=T, start=start, **self.rope_kw)
            k = A.rope(ctx, k0, n_heads=self.spec.KVH, Bsz=Bsz, T=T, start=start, **self.rope_kw)
            ctx.done(q0, k0)
        if state is not None:
            state.check_room(state.tokens_seen + T)
            o = A.attention_cached(ctx, q, k, v, state.k, state.v, state.tokens_seen, Bsz, T,
                                   **self.kw)
        else:
            o = A.attention(ctx, q, k, v, Bsz, T, **self.kw)
        ctx.done(q, k, v)
        out = F.residual_linear(ctx, o, self.wo, self.bo, residual)
        ctx.done(o)
        return out

    def step(self, batch, h, residual, Bsz, state):
        s = self.spec
        if self.qkv_unbiased:   # one mat-vec for q, k and v
            q, k, v = linear_multi(batch, h, [self.wq, self.wk, self.wv])
        else:
            q, k, v = (linear_forward(batch, h, w, b) for w, b in
                       ((self.wq, self.bq), (self.wk, self.bk), (self.wv, self.bv)))
        if s.rope:   # rotate before attention_step writes k into the cache (rotated keys cached)
            q0, k0 = q, k
            q = rope_apply(batch, q0, n_heads=s.H, Bsz=Bsz, T=1, pos=state.pos, **self.rope_kw)
            k = rope_apply(batch, k0, n_heads=s.KVH, Bsz=Bsz, T=1, pos=state.pos, **self.rope_kw)
            q0.release()
            k0.release()
        o = attention_step(batch, q, k, v, state.k, state.v, state.pos, **self.kw)
        for t in (q, k, v):
            t.release()
        linear_accumulate(batch, o, self.wo, residual, bias=self.bo)
        o.release()


class KVCache:
    """k, v [Bsz, KVH, Tmax, Dh] of one attention layer; `pos` is the model's GPU position
    buffer (set by ModelState), the slot the next token's k/v go to."""

    # A prefill writes slots [pos, pos + T) and leaves the earlier ones: nothing to back up
    # before it (ModelState.overwritten_tensors).
    APPEND_ONLY = True

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        s = spec(cfg)
        self.Tmax = int(max_tokens or s.max_tokens)
        self.k = Tensor(device, (Bsz, s.KVH, self.Tmax, s.Dh))
        self.v = Tensor(device, (Bsz, s.KVH, self.Tmax, s.Dh))
        self.pos = None
        self.tokens_seen = 0

    @property
    def capacity(self):
        return self.Tmax

    def check_room(self, total):
        if total > self.Tmax:
            raise ValueError(f"the attention KV cache holds {self.Tmax} tokens and this would "
                             f"make {total}: start a new conversation, or load the model with a "
                             "longer max_tokens (GPU memory permitting)")

    def tensors(self):
        return (self.k, self.v)


@register
class Attention(LayerKind):
    """The attention layer kind."""
    name = "attention"
    mbjs_type = 3
    Mixer = AttentionMixer
    State = KVCache
    spec = staticmethod(spec)

    @staticmethod
    def validate(cfg, source):
        s = spec(cfg)
        for name, v in (("num_attention_heads", s.H), ("num_key_value_heads", s.KVH),
                        ("head_dim", s.Dh)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{source}: attention {name} must be a positive integer, "
                                 f"got {v!r}")
        if s.H % s.KVH:
            raise ValueError(f"{source}: num_attention_heads {s.H} is not a multiple of "
                             f"num_key_value_heads {s.KVH}")
        if s.rope:
            if not 2 <= s.rot <= min(s.Dh, MAX_ROT):
                raise ValueError(f"{source}: rotary dim int(head_dim {s.Dh} * "
                                 f"partial_rotary_factor {cfg.partial_rotary_factor}) rounded "
                                 f"down to even = {s.rot}; it must be 2 .. min(head_dim, "
                                 f"{MAX_ROT})")
            if not s.theta > 0.0:
                raise ValueError(f"{source}: rope_theta must be positive, got {s.theta!r}")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        qb, ob = cfg.attention_qkv_bias, cfg.attention_out_bias
        if cfg.checkpoint_layout == "mamba_ssm":
            qkv = (s.H + 2 * s.KVH) * s.Dh
            out = {"in_proj.weight": (qkv, s.D)}
            if qb:
                out["in_proj.bias"] = (qkv,)
            out["out_proj.weight"] = (s.D, s.H * s.Dh)
            if ob:
                out["out_proj.bias"] = (s.D,)
            return out
        out = {}
        for r, rows in (("q", s.H * s.Dh), ("k", s.KVH * s.Dh), ("v", s.KVH * s.Dh)):
            out[f"{r}_proj.weight"] = (rows, s.D)
            if qb:
                out[f"{r}_proj.bias"] = (rows,)
        out["o_proj.weight"] = (s.D, s.H * s.Dh)
        if ob:
            out["o_proj.bias"] = (s.D,)
        return out

    @staticmethod
    def pieces(cfg, rel, shape):
        if rel in ("in_proj.weight", "in_proj.bias"):     # mamba_ssm: rows [q | k | v]
            s = spec(cfg)
            q, kv = s.H * s.Dh, s.KVH * s.Dh
            tail = tuple(shape[1:])
            return [(f"{rel}#q", 0, q, (q,) + tail), (f"{rel}#k", q, q + kv, (kv,) + tail),
                    (f"{rel}#v", q + kv, q + 2 * kv, (kv,) + tail)]
        return whole(rel, shape)

    @staticmethod
    def init_rule(cfg, rel, shape):
        """nn.Linear's default U(+-1/sqrt(fan_in)), biases 0; the output projection
        / sqrt(n_layer) when rescale_prenorm_residual (one residual per layer)."""
        if rel.endswith(".bias"):
            return "const", 0.0, 0
        a = 1.0 / math.sqrt(shape[1])
        if rel in ("o_proj.weight", "out_proj.weight") and cfg.rescale_prenorm_residual:
            a /= math.sqrt(cfg.num_hidden_layers)
        return "uniform", a, 0

    @staticmethod
    def hint(cfg, rel):
        if rel.endswith(".bias"):
            out = rel.startswith(("o_proj", "out_proj"))
            if out and not cfg.attention_out_bias:
                return " (config has no attention output bias: attn_cfg.out_proj_bias=false)"
            if not out and not cfg.attention_qkv_bias:
                return " (config has no attention q/k/v bias: attn_cfg.qkv_proj_bias=false)"
        return ""

    @staticmethod
    def train_floats(cfg, Bsz, T):
        s = spec(cfg)
        rows = Bsz * T
        rope = rows * (s.H + s.KVH) * s.Dh if s.rope else 0   # the un-rotated q, k kept too
        return rows * (2 * s.H * s.Dh + 2 * s.KVH * s.Dh) + Bsz * s.H * T + rope
