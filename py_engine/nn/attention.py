"""Causal self-attention with grouped-query heads (NemotronH's attention block).

Shapes: Bsz sequences of T tokens; activations are [Bsz*T, C] row-major.
  D d_model, H query heads, KVH key/value heads (head h reads kv head h // (H/KVH)), Dh head dim.
  h [Bsz*T, D] --q_proj--> q [.., H*Dh]   --k_proj--> k [.., KVH*Dh]   --v_proj--> v [.., KVH*Dh]
  o_t = softmax_s<=t(q_t . k_s * Dh^-0.5) v_s   (py_engine/ops/attention.py, online softmax)
  residual + o @ o_proj^T
No rotary embedding (NemotronH uses none). State (decode): the KV cache k, v [Bsz, KVH, Tmax, Dh],
written at the GPU-side position (ModelState.pos), so the recorded step replays unchanged.

HF tensors (relative to backbone.layers.{i}.mixer.): q_proj.weight [H*Dh, D], k_proj.weight
[KVH*Dh, D], v_proj.weight [KVH*Dh, D], o_proj.weight [D, H*Dh]; transformers' NemotronH
attention has no biases.
Decode dispatches per layer: norm 1, q|k|v 1 (one matvec over three weights), attention step
(see ops/attention.py), o_proj accumulating into the residual 1.
"""
import math
from dataclasses import dataclass

from py_engine.autograd import attention as A
from py_engine.autograd import functional as F
from py_engine.gpu.tensor import Tensor
from py_engine.nn.registry import register
from py_engine.ops.attention import attention_step
from py_engine.ops.linear import linear_multi, matmul


@dataclass(frozen=True)
class AttentionSpec:
    D: int
    H: int
    KVH: int
    Dh: int
    max_tokens: int     # default KV-cache length (max_position_embeddings)


def spec(cfg):
    return AttentionSpec(D=cfg.hidden_size, H=cfg.attention_heads, KVH=cfg.attention_kv_heads,
                         Dh=cfg.attention_head_dim, max_tokens=cfg.max_position_embeddings)


class AttentionMixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.spec = spec(cfg)
        self.wq, self.wk, self.wv = w("q_proj.weight"), w("k_proj.weight"), w("v_proj.weight")
        self.wo = w("o_proj.weight")
        self.kw = dict(n_heads=self.spec.H, n_kv_heads=self.spec.KVH)

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        q = F.linear(ctx, h, self.wq)                  # [Bsz*T, H*Dh]
        k = F.linear(ctx, h, self.wk)                  # [Bsz*T, KVH*Dh]
        v = F.linear(ctx, h, self.wv)
        if state is not None:
            state.check_room(state.tokens_seen + T)
            o = A.attention_cached(ctx, q, k, v, state.k, state.v, state.tokens_seen, Bsz, T,
                                   **self.kw)
        else:
            o = A.attention(ctx, q, k, v, Bsz, T, **self.kw)
        ctx.done(q, k, v)
        out = F.residual_linear(ctx, o, self.wo, None, residual)
        ctx.done(o)
        return out

    def step(self, batch, h, residual, Bsz, state):
        s = self.spec
        q, k, v = linear_multi(batch, h, [self.wq, self.wk, self.wv])
        o = attention_step(batch, q, k, v, state.k, state.v, state.pos, **self.kw)
        for t in (q, k, v):
            t.release()
        matmul(batch, o, self.wo, residual, Bsz, s.D, s.H * s.Dh, (s.H * s.Dh, 1, 1, s.H * s.Dh),
               accumulate=True)
        o.release()


class KVCache:
    """k, v [Bsz, KVH, Tmax, Dh] of one attention layer; `pos` is the model's GPU position
    buffer (set by ModelState), the slot the next token's k/v go to."""

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
class Attention:
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

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        return {"q_proj.weight": (s.H * s.Dh, s.D), "k_proj.weight": (s.KVH * s.Dh, s.D),
                "v_proj.weight": (s.KVH * s.Dh, s.D), "o_proj.weight": (s.D, s.H * s.Dh)}

    @staticmethod
    def pieces(cfg, rel, shape):
        return [(rel, 0, shape[0], tuple(shape))]

    @staticmethod
    def init_rule(cfg, rel, shape):
        """nn.Linear's default U(+-1/sqrt(fan_in)); o_proj / sqrt(n_layer) when
        rescale_prenorm_residual (one residual per layer)."""
        a = 1.0 / math.sqrt(shape[1])
        if rel == "o_proj.weight" and cfg.rescale_prenorm_residual:
            a /= math.sqrt(cfg.num_hidden_layers)
        return "uniform", a, 0

    @staticmethod
    def hint(cfg, rel):
        return ""

    @staticmethod
    def wsla_pieces(cfg):
        return ()      # WSLA adapts the SSM layers; attention stays frozen

    @staticmethod
    def train_floats(cfg, Bsz, T):
        s = spec(cfg)
        rows = Bsz * T
        return rows * (2 * s.H * s.Dh + 2 * s.KVH * s.Dh) + Bsz * s.H * T
