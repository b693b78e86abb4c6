"""The MLP layer kind: NemotronH's non-gated `down(relu(up(x))^2)`.

Shapes: h [Bsz*T, D] --up_proj--> u [.., F] --relu^2--> a [.., F] --down_proj--> + residual.
HF tensors (relative to backbone.layers.{i}.mixer.): up_proj.weight [F, D], down_proj.weight
[D, F] (+ up_proj.bias [F], down_proj.bias [D] with mlp_bias). No recurrent state.
Decode dispatches per layer: norm 1, up 1, relu^2 1, down accumulating into the residual 1.
"""
import math
from dataclasses import dataclass

from py_engine.autograd import functional as F
from py_engine.autograd import mlp as M
from py_engine.nn.registry import LayerKind, register
from py_engine.ops.activations import relu2_forward
from py_engine.ops.linear import linear_accumulate, linear_forward, relu2_accumulate


def linear_init_rule(cfg, rel, shape, residual_out):
    """An MLP kind's init (shared by mlp and gated_mlp): nn.Linear's U(+-1/sqrt(fan_in)),
    biases 0; the projection back into the residual (`residual_out`) / sqrt(n_layer) with
    rescale_prenorm_residual (one residual per schedule layer)."""
    if rel.endswith(".bias"):
        return "const", 0.0, 0
    a = 1.0 / math.sqrt(shape[1])
    if rel == residual_out and cfg.rescale_prenorm_residual:
        a /= math.sqrt(cfg.num_hidden_layers)
    return "uniform", a, 0


def bias_hint(cfg, rel):
    """The loader's hint for an MLP bias the config does not ask for."""
    if rel.endswith(".bias") and not cfg.mlp_bias:
        return " (config has mlp_bias=false)"
    return ""


@dataclass(frozen=True)
class MlpSpec:
    D: int
    F: int
    act: str
    bias: bool


def spec(cfg):
    return MlpSpec(D=cfg.hidden_size, F=cfg.mlp_intermediate_size, act=cfg.mlp_hidden_act,
                   bias=cfg.mlp_bias)


class MlpMixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.spec = spec(cfg)
        self.up, self.up_b = w("up_proj.weight"), w("up_proj.bias")
        self.down, self.down_b = w("down_proj.weight"), w("down_proj.bias")

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        u = F.linear(ctx, h, self.up, self.up_b)       # [Bsz*T, F]
        a = M.relu2(ctx, u)
        ctx.done(u)
        out = F.residual_linear(ctx, a, self.down, self.down_b, residual)
        ctx.done(a)
        return out

    def step(self, batch, h, residual, Bsz, state):
        u = linear_forward(batch, h, self.up, self.up_b)
        # relu^2 folded into down_proj's mat-vec where it applies
        if not relu2_accumulate(batch, u, self.down, residual, bias=self.down_b):
            a = relu2_forward(batch, u)
            linear_accumulate(batch, a, self.down, residual, bias=self.down_b)
            a.release()
        u.release()


class NoState:
    """An MLP layer carries nothing from one token to the next."""

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        self.tokens_seen = 0

    def tensors(self):
        return ()


@register
class Mlp(LayerKind):
    name = "mlp"
    Mixer = MlpMixer
    State = NoState
    spec = staticmethod(spec)
    hint = staticmethod(bias_hint)

    @staticmethod
    def validate(cfg, source):
        s = spec(cfg)
        if isinstance(s.F, bool) or not isinstance(s.F, int) or s.F <= 0:
            raise ValueError(f"{source}: MLP intermediate_size must be a positive integer, "
                             f"got {s.F!r}")
        if s.act != "relu2":
            raise ValueError(f"{source}: MLP activation {s.act!r} is not supported; supported: "
                             "'relu2' (NemotronH)")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        out = {"up_proj.weight": (s.F, s.D)}
        if s.bias:
            out["up_proj.bias"] = (s.F,)
        out["down_proj.weight"] = (s.D, s.F)
        if s.bias:
            out["down_proj.bias"] = (s.D,)
        return out

    @staticmethod
    def init_rule(cfg, rel, shape):
        return linear_init_rule(cfg, rel, shape, "down_proj.weight")

    @staticmethod
    def train_floats(cfg, Bsz, T):
        return Bsz * T * 2 * spec(cfg).F
