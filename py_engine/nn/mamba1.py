"""The Mamba-1 mixer (and Falcon-Mamba's variant).

Shapes: Bsz sequences of T tokens; activations are [Bsz*T, C] row-major.
  h [Bsz*T, D] --in_proj#x--> x [.., I]      --in_proj#z--> z [.., I]
  x --causal depthwise conv (K taps) + bias, SiLU--> u [.., I]
  u --x_proj#dt--> dt_low [.., R]   --x_proj#B--> B [.., N]   --x_proj#C--> C [.., N]
     (Falcon-Mamba: weightless RMSNorm, eps mixer_rms_eps, on dt_low here and on B, C
      inside the scan kernel)
  dt_low --dt_proj (no bias)--> delta [.., I]
  scan: dt = softplus(delta + dt_bias); A = -exp(A_log)
        h_t = exp(dt*A) * h_{t-1} + dt * B_t * u_t;  y_t = (C_t . h_t + D * u_t) * silu(z_t)
  residual + y @ out_proj^T (+ bias)
`forward` goes through py_engine.autograd.functional, so the same code trains (with a tape)
and infers (without). `step` is the recurrent decode path (inference only) against
conv_state [Bsz, I, K] (last K pre-conv inputs, newest last) and ssm_state [Bsz, I, N].

HF tensors of one layer (relative to backbone.layers.{i}.mixer., transformers' order):
  A_log [I, N]   D [I]   conv1d.weight [I, 1, K]   conv1d.bias [I] (use_conv_bias)
  in_proj.weight [2I, D] rows x then z;  in_proj.bias [2I] (use_bias)
  x_proj.weight [R+2N, I] rows dt (R), B (N), C (N);  dt_proj.weight [I, R];  dt_proj.bias [I]
  out_proj.weight [D, I];  out_proj.bias [D] (use_bias)
GPU pieces: in_proj -> "#x", "#z"; x_proj -> "#dt", "#B", "#C"; conv1d.weight -> [I, K].
"""
import math
from dataclasses import dataclass

from py_engine.gpu.tensor import Tensor
from py_engine.ops import conv1d as conv_ops
from py_engine.ops import selective_scan as scan_ops
from py_engine.ops.linear import (in_proj_conv_step, in_proj_conv_xproj_step, linear_accumulate,
                                  linear_forward, linear_multi)
from py_engine.ops.lora import adapter_of
from py_engine.ops.rmsnorm import rmsnorm_forward
from py_engine.autograd import functional as F
from py_engine.nn.registry import bias_hint, conv_param_packs, conv_weight, register, whole


@dataclass(frozen=True)
class Mamba1Spec:
    """The sizes a Mamba-1 layer reads from the model config."""
    D: int        # d_model
    I: int        # inner channels (expand * D)
    N: int        # state size (<= 16 for the scan kernel)
    K: int        # conv taps
    R: int        # dt rank
    use_bias: bool
    use_conv_bias: bool
    bc_eps: float = None   # Falcon-Mamba's weightless B/C/dt RMSNorm eps; None for Mamba


def spec(cfg):
    return Mamba1Spec(D=cfg.hidden_size, I=int(cfg.expand * cfg.hidden_size), N=cfg.state_size,
                      K=cfg.conv_kernel, R=cfg.time_step_rank, use_bias=cfg.use_bias,
                      use_conv_bias=cfg.use_conv_bias,
                      bc_eps=cfg.mixer_rms_eps if cfg.model_type == "falcon_mamba" else None)


class Mamba1Mixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.cfg = cfg
        self.spec = spec(cfg)
        self.in_x, self.in_z = w("in_proj.weight#x"), w("in_proj.weight#z")
        self.in_x_b, self.in_z_b = w("in_proj.bias#x"), w("in_proj.bias#z")
        self.conv_w, self.conv_b = w("conv1d.weight"), w("conv1d.bias")
        self.x_dt, self.x_B, self.x_C = w("x_proj.weight#dt"), w("x_proj.weight#B"), w("x_proj.weight#C")
        self.dt_w, self.dt_b = w("dt_proj.weight"), w("dt_proj.bias")
        self.A_log, self.D = w("A_log"), w("D")
        self.out_w, self.out_b = w("out_proj.weight"), w("out_proj.bias")
        self.bc_eps = self.spec.bc_eps

    @property
    def in_unbiased(self):
        """Neither in_proj half has a bias: the paths that multiply both at once (one GEMM,
        one mat-vec, the folded conv step) take none."""
        return self.in_x_b is None and self.in_z_b is None

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        """h = norm(residual) [Bsz*T, D] -> new residual. `state` (LayerState): continue from
        it and leave the final state there (inference only)."""
        if self.in_unbiased:   # both halves in one GEMM on a GPU
            x, z = F.linear_many(ctx, h, [self.in_x, self.in_z])
        else:
            x = F.linear(ctx, h, self.in_x, self.in_x_b)
            z = F.linear(ctx, h, self.in_z, self.in_z_b)
        if state is not None:
            u = F.conv1d_with_state(ctx, x, self.conv_w, self.conv_b, Bsz, T, state)
        else:
            u = F.conv1d(ctx, x, self.conv_w, self.conv_b, Bsz, T)
        ctx.done(x)
        dt_low, B, C = F.linear_many(ctx, u, [self.x_dt, self.x_B, self.x_C])
        if self.bc_eps is not None:
            normed = F.rmsnorm(ctx, dt_low, None, self.bc_eps)
            ctx.done(dt_low)
            dt_low = normed
        delta = F.linear(ctx, dt_low, self.dt_w)
        ctx.done(dt_low)
        y = F.selective_scan(ctx, u, delta, self.A_log, B, C, self.D, z, self.dt_b, Bsz, T,
                             state=state.ssm if state is not None else None,
                             norm_bc_eps=self.bc_eps)
        ctx.done(u, delta, B, C, z)
        out = F.residual_linear(ctx, y, self.out_w, self.out_b, residual)
        ctx.done(y)
        return out

    def step(self, batch, h, residual, Bsz, state):
        """One token per sequence: h [Bsz, D]; updates `state` and `residual` in place."""
        dt_in_scan = (scan_ops.step_takes_dt_proj(batch.device, self.dt_b, self.A_log, self.D,
                                                  self.dt_w)
                      and adapter_of(batch.device, self.dt_w) is None)
        if self.in_unbiased and dt_in_scan:
            # in_proj, the conv step and x_proj's shares in one dispatch, the scan step (with
            # dt_proj) summing the shares in the next: three dispatches a layer
            fused = in_proj_conv_xproj_step(batch, h, [self.in_x, self.in_z], self.conv_w,
                                            self.conv_b, state.conv,
                                            (self.x_dt, self.x_B, self.x_C))
            if fused is not None:
                u, z, xpart = fused
                y = scan_ops.selective_scan_step(batch, u, None, self.A_log, None, None,
                                                 state.ssm, D=self.D, z_t=z, dt_bias=self.dt_b,
                                                 norm_bc_eps=self.bc_eps, dt_w=self.dt_w,
                                                 xpart=xpart)
                for t in (u, z, xpart[0]):
                    t.release()
                linear_accumulate(batch, y, self.out_w, residual, bias=self.out_b)
                y.release()
                return
        fused = None
        if self.in_unbiased:   # in_proj's halves and the conv step in one dispatch
            fused = in_proj_conv_step(batch, h, [self.in_x, self.in_z], 0, self.conv_w,
                                      self.conv_b, state.conv)
        if fused is not None:
            u, z = fused
        else:
            if self.in_unbiased:   # x and z halves of in_proj in one dispatch
                x, z = linear_multi(batch, h, [self.in_x, self.in_z])
            else:
                x = linear_forward(batch, h, self.in_x, self.in_x_b)
                z = linear_forward(batch, h, self.in_z, self.in_z_b)
            u = conv_ops.conv1d_step(batch, x, state.conv, self.conv_w, self.conv_b, silu=True)
            x.release()
        dt_low, B, C = linear_multi(batch, u, [self.x_dt, self.x_B, self.x_C])
        if dt_in_scan:
            # dt_proj (and Falcon's dt_low norm) inside the scan step: one dispatch fewer
            y = scan_ops.selective_scan_step(batch, u, dt_low, self.A_log, B, C, state.ssm,
                                             D=self.D, z_t=z, dt_bias=self.dt_b,
                                             norm_bc_eps=self.bc_eps, dt_w=self.dt_w)
        else:
            if self.bc_eps is not None:
                normed, rstd = rmsnorm_forward(batch, dt_low, None, eps=self.bc_eps)
                rstd.release()
                dt_low.release()
                dt_low = normed
            delta = linear_forward(batch, dt_low, self.dt_w)
            y = scan_ops.selective_scan_step(batch, u, delta, self.A_log, B, C, state.ssm,
                                             D=self.D, z_t=z, dt_bias=self.dt_b,
                                             norm_bc_eps=self.bc_eps)
            delta.release()
        for t in (u, dt_low, B, C, z):
            t.release()
        linear_accumulate(batch, y, self.out_w, residual, bias=self.out_b)
        y.release()


class LayerState:
    """conv [Bsz, I, K] and ssm [Bsz, I, N] of one Mamba-1 layer, owned GPU tensors."""

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        s = spec(cfg)
        I, K, N = s.I, s.K, s.N
        self.conv = Tensor(device, (Bsz, I, K))
        self.ssm = Tensor(device, (Bsz, I, N))
        self.tokens_seen = 0

    def tensors(self):
        return (self.conv, self.ssm)


@register
class Mamba1:
    """The Mamba-1 layer kind (transformers' MambaMixer / FalconMambaMixer)."""
    name = "mamba1"
    mbjs_type = 0
    Mixer = Mamba1Mixer
    State = LayerState
    spec = staticmethod(spec)

    @staticmethod
    def linear_piece(rel):
        """Matrices that may be stored narrow: in_proj, x_proj, out_proj. dt_proj stays f32:
        the decode scan step applies it itself (selective_scan_step.wgsl), and it is small
        (I x dt_rank, ~1% of the layer)."""
        return rel.split("#")[0] in ("in_proj.weight", "x_proj.weight", "out_proj.weight")

    @staticmethod
    def validate(cfg, source):
        if cfg.model_type not in ("mamba", "falcon_mamba"):
            raise ValueError(f"{source}: mamba1 layers need model_type 'mamba' or "
                             f"'falcon_mamba', not {cfg.model_type!r}")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        D, I, N, K, R = s.D, s.I, s.N, s.K, s.R
        out = {"A_log": (I, N), "D": (I,), "conv1d.weight": (I, 1, K)}
        if s.use_conv_bias:
            out["conv1d.bias"] = (I,)
        out["in_proj.weight"] = (2 * I, D)
        if s.use_bias:
            out["in_proj.bias"] = (2 * I,)
        out["x_proj.weight"] = (R + 2 * N, I)
        out["dt_proj.weight"] = (I, R)
        out["dt_proj.bias"] = (I,)
        out["out_proj.weight"] = (D, I)
        if s.use_bias:
            out["out_proj.bias"] = (D,)
        return out

    @staticmethod
    def decode_packs(cfg):
        """x_proj's dt, B and C row blocks side by side in one buffer (ops/weight_pack.pack_rows):
        in_proj's mat-vec with x_proj folded in reads all three through one binding
        (weight_format.xproj_rows_binding; 10 storage bindings, where B and C apart took 12)."""
        return (("x_proj.weight#dt", "x_proj.weight#B", "x_proj.weight#C"),)

    @staticmethod
    def decode_param_packs(cfg):
        """The conv fold's (registry.conv_param_packs) and the fused scan step's: dt_proj's bias,
        A_log, D and dt_proj.weight (f32) side by side, read through one binding (9 storage
        bindings, ops/selective_scan.STEP_STORAGE; 12 apart)."""
        return conv_param_packs(cfg) + (("mixer.dt_proj.bias", "mixer.A_log", "mixer.D",
                                         "mixer.dt_proj.weight"),)


    @staticmethod
    def pieces(cfg, rel, shape):
        s = spec(cfg)
        I, N, R = s.I, s.N, s.R
        rest = tuple(shape[1:])
        if rel in ("in_proj.weight", "in_proj.bias"):
            return [(rel + "#x", 0, I, (I,) + rest), (rel + "#z", I, 2 * I, (I,) + rest)]
        if rel == "x_proj.weight":
            return [(rel + "#dt", 0, R, (R,) + rest), (rel + "#B", R, R + N, (N,) + rest),
                    (rel + "#C", R + N, R + 2 * N, (N,) + rest)]
        if rel == "conv1d.weight":
            return conv_weight(rel, shape)
        return whole(rel, shape)

    @staticmethod
    def init_rule(cfg, rel, shape):
        """(distribution, a, period): state-spaces/mamba's Mamba-1 init (py_engine/train/init.py)."""
        s = spec(cfg)
        if rel == "D":
            return "const", 1.0, 0
        if rel == "A_log":
            return "s4d_alog", 0.0, s.N          # log(1..N) along each row
        if rel == "dt_proj.bias":
            return "dt_bias", 0.0, 0
        if rel == "dt_proj.weight":
            a = s.R ** -0.5 * cfg.time_step_scale
            return ("const" if cfg.time_step_init_scheme == "constant" else "uniform"), a, 0
        if rel in ("conv1d.weight", "conv1d.bias"):
            return "uniform", 1.0 / math.sqrt(s.K), 0
        if rel in ("in_proj.bias", "out_proj.bias"):
            return "const", 0.0, 0
        if rel == "in_proj.weight":
            return "uniform", 1.0 / math.sqrt(s.D), 0
        if rel == "x_proj.weight":
            return "uniform", 1.0 / math.sqrt(s.I), 0
        if rel == "out_proj.weight":
            a = 1.0 / math.sqrt(s.I)
            if cfg.rescale_prenorm_residual:
                a /= math.sqrt(cfg.num_hidden_layers)
            return "uniform", a, 0
        raise ValueError(f"no initialisation rule for mamba1 tensor {rel}")

    @staticmethod
    def wsla_pieces(cfg):
        """The GPU pieces WSLA trains: the selective projection's B and C rows."""
        return ("x_proj.weight#B", "x_proj.weight#C")

    @staticmethod
    def train_floats(cfg, Bsz, T):
        """Floats a layer keeps for its backward (the memory estimate): x, z, u, delta, B, C,
        y and the scan's transient states."""
        s = spec(cfg)
        rows = Bsz * T
        return rows * (6 * s.I + 2 * s.N)

    hint = staticmethod(bias_hint)
