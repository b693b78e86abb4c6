"""The gated MLP layer kind: SwiGLU, `fc2(silu(gate) * up)` (mamba_ssm's GatedMLP; the
Llama/Jamba/Zamba feed-forward with gate and up fused into one projection).

Shapes: h [Bsz*T, D] --fc1--> u [.., 2F] = [up (F) | gate (F)]  (mamba_ssm's fc1 row order:
`y, gate = fc1(x).chunk(2, dim=-1)`; the FIRST half is multiplied, the SECOND is gated)
  a = silu(u[:, F:]) * u[:, :F]  [.., F]   (py_engine/ops/activations.py swiglu, read as two
                                            column windows of u: no split copies)
  residual + a @ fc2^T (+ fc2.bias)
Tensors (relative to backbone.layers.{i}.mixer.): fc1.weight [2F, D], fc2.weight [D, F], and
with mlp_bias fc1.bias [2F], fc2.bias [D]. mamba_ssm files keep them under
`layers.{block}.mlp.` (py_engine/io/layouts.py maps them). No recurrent state.
Decode dispatches per layer: norm folded into fc1 1, swiglu 1, fc2 accumulating into the
residual 1.
"""
from dataclasses import dataclass

from py_engine.autograd import functional as F
from py_engine.autograd import mlp as M
from py_engine.nn.mlp import NoState, bias_hint, linear_init_rule
from py_engine.nn.registry import LayerKind, register
from py_engine.ops.activations import Cols, swiglu_forward
from py_engine.ops.linear import linear_accumulate, linear_forward


@dataclass(frozen=True)
class GatedMlpSpec:
    D: int
    F: int
    bias: bool


def spec(cfg):
    return GatedMlpSpec(D=cfg.hidden_size, F=cfg.mlp_intermediate_size, bias=cfg.mlp_bias)


class GatedMlpMixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.spec = spec(cfg)
        self.fc1, self.fc1_b = w("fc1.weight"), w("fc1.bias")
        self.fc2, self.fc2_b = w("fc2.weight"), w("fc2.bias")

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        u = F.linear(ctx, h, self.fc1, self.fc1_b)       # [Bsz*T, 2F]: [up | gate]
        a = M.swiglu(ctx, u, self.spec.F)                # [Bsz*T, F]
        ctx.done(u)
        out = F.residual_linear(ctx, a, self.fc2, self.fc2_b, residual)
        ctx.done(a)
        return out

    def step(self, batch, h, residual, Bsz, state):
        n = self.spec.F
        u = linear_forward(batch, h, self.fc1, self.fc1_b)          # [Bsz, 2F]
        a = swiglu_forward(batch, Cols(u, n, n), Cols(u, 0, n))     # gate, up
        u.release()
        linear_accumulate(batch, a, self.fc2, residual, bias=self.fc2_b)
        a.release()


@register
class GatedMlp(LayerKind):
    # fc1 stays one GPU tensor (LayerKind.pieces): one GEMM, the swiglu reads both halves
    name = "gated_mlp"
    Mixer = GatedMlpMixer
    State = NoState
    spec = staticmethod(spec)
    hint = staticmethod(bias_hint)

    @staticmethod
    def validate(cfg, source):
        s = spec(cfg)
        if isinstance(s.F, bool) or not isinstance(s.F, int) or s.F <= 0:
            raise ValueError(f"{source}: gated MLP intermediate size must be a positive integer, "
                             f"got {s.F!r}")
        if cfg.model_type == "nemotron_h":
            raise ValueError(f"{source}: NemotronH has no gated (SwiGLU) MLP block, only the "
                             "relu2 MLP ('mlp'); use a mamba_ssm layout for gated MLPs")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        out = {"fc1.weight": (2 * s.F, s.D)}
        if s.bias:
            out["fc1.bias"] = (2 * s.F,)
        out["fc2.weight"] = (s.D, s.F)
        if s.bias:
            out["fc2.bias"] = (s.D,)
        return out

    @staticmethod
    def linear_piece(rel):
        return rel in ("fc1.weight", "fc2.weight")

    @staticmethod
    def init_rule(cfg, rel, shape):
        return linear_init_rule(cfg, rel, shape, "fc2.weight")

    @staticmethod
    def train_floats(cfg, Bsz, T):
        return Bsz * T * 3 * spec(cfg).F      # u [.., 2F] and a [.., F] kept for backward
