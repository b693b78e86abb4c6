"""The Mamba-2 mixer (SSD), as transformers' `Mamba2Mixer` and state-spaces' `Mamba2`.

Shapes: Bsz sequences of T tokens; activations are [Bsz*T, C] row-major.
  D d_model, I = expand*D inner channels = H heads x P head_dim, G groups, N state,
  K conv taps, CD = I + 2*G*N conv channels.
  h [Bsz*T, D] --in_proj#z--> z [.., I]  --in_proj#xBC--> xBC [.., CD]  --in_proj#dt--> dt [.., H]
  xBC --causal depthwise conv (K taps) + bias, SiLU--> u [.., CD] = [x (I) | B (G*N) | C (G*N)]
  SSD (py_engine/ops/ssd.py): dt = clamp(softplus(dt + dt_bias), time_step_limit); A = -exp(A_log)
        h_t[h] = exp(dt_t[h] A[h]) h_{t-1}[h] + dt_t[h] B_t[g(h)] x_t[h]      g(h) = h // (H/G)
        y_t[h] = C_t[g(h)] . h_t[h] + D[h] x_t[h]                            y [.., I]
  gated RMSNorm (norm_before_gate=False): v = y * silu(z); each group of I/G channels of v is
        divided by its RMS (eps = layer_norm_epsilon) and scaled by norm.weight
  residual + v @ out_proj^T (+ bias)
State (decode): conv [Bsz, CD, K] (last K pre-conv inputs, newest last) and ssm [Bsz, H, P, N].

HF tensors of one layer (relative to backbone.layers.{i}.mixer., transformers' order):
  dt_bias [H]  A_log [H]  D [H]  conv1d.weight [CD, 1, K]  conv1d.bias [CD] (use_conv_bias)
  in_proj.weight [I + CD + H, D] rows z | x | B | C | dt;  in_proj.bias (use_bias)
  norm.weight [I]   out_proj.weight [D, I];  out_proj.bias [D] (use_bias)
GPU pieces: in_proj -> "#z" [I, D], "#xBC" [CD, D], "#dt" [H, D] (and the bias likewise);
conv1d.weight -> [CD, K].
mamba_ssm checkpoints hold the same mixer tensors under the same names.

Decode dispatches per layer: RMSNorm 1, in_proj 1 (3 row blocks in one matvec without bias),
conv step 1, SSD step 1, gated norm 1, out_proj accumulating into the residual 1 = 6.
"""
import math
from dataclasses import dataclass

from py_engine.autograd import functional as F
from py_engine.autograd import ssd as SSD
from py_engine.gpu.tensor import Tensor
from py_engine.nn.registry import bias_hint, conv_param_packs, conv_weight, register, whole
from py_engine.ops import conv1d as conv_ops
from py_engine.ops.conv1d import Cols
from py_engine.ops.gated_rmsnorm import gated_rmsnorm_forward
from py_engine.ops.linear import (gated_norm_accumulate, in_proj_conv_step, linear_accumulate,
                                  linear_forward, linear_multi)
from py_engine.ops.ssd import ssd_step


# Chunk length of the SSD kernels, at most the config's chunk_size. The SSD result does not
# depend on the chunking (only rounding does), so the kernels pick what suits a GPU. They run
# one workgroup per (sequence, head, chunk): 256-token chunks leave a big GPU idle (24
# workgroups for mamba2-130m at T <= 256) and do 8x the intra-chunk work of 32. Measured on an
# H200, mamba2-130m prefill 64/256/1024 tok/s: chunk 256 1284/878/2485, 64 1279/3309/9249,
# 32 1350/5136/11641, 16 529/2812/12636 (mamba2-1.3b: 424/355/692 at 256, 458/1177/1466 at 32).
KERNEL_CHUNK = 32


@dataclass(frozen=True)
class Mamba2Spec:
    """The sizes a Mamba-2 layer reads from the model config."""
    D: int
    I: int
    H: int
    P: int
    G: int
    N: int
    K: int
    chunk: int
    dt_min: float
    dt_max: float
    eps: float
    use_bias: bool
    use_conv_bias: bool

    @property
    def CD(self):      # conv channels: x | B | C
        return self.I + 2 * self.G * self.N


def spec(cfg):
    # Mamba-2 and NemotronH alike (transformers >= 5.25; 5.24's NemotronH clamped to
    # [time_step_min, inf) instead): the chunked path clamps dt to time_step_limit, the
    # one-token path does not clamp (nor does ours, see step).
    lo, hi = cfg.time_step_limit
    return Mamba2Spec(D=cfg.hidden_size, I=cfg.num_heads * cfg.head_dim, H=cfg.num_heads,
                      P=cfg.head_dim, G=cfg.n_groups, N=cfg.state_size, K=cfg.conv_kernel,
                      chunk=cfg.chunk_size, dt_min=float(lo), dt_max=float(hi),
                      eps=cfg.layer_norm_epsilon, use_bias=cfg.use_bias,
                      use_conv_bias=cfg.use_conv_bias)


class Mamba2Mixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.spec = s = spec(cfg)
        self.in_z, self.in_xbc, self.in_dt = (w("in_proj.weight#z"), w("in_proj.weight#xBC"),
                                              w("in_proj.weight#dt"))
        self.in_z_b, self.in_xbc_b, self.in_dt_b = (w("in_proj.bias#z"), w("in_proj.bias#xBC"),
                                                    w("in_proj.bias#dt"))
        self.conv_w, self.conv_b = w("conv1d.weight"), w("conv1d.bias")
        self.dt_bias, self.A_log, self.D = w("dt_bias"), w("A_log"), w("D")
        self.norm_w = w("norm.weight")
        self.out_w, self.out_b = w("out_proj.weight"), w("out_proj.bias")
        self.ssd_kw = dict(n_groups=s.G, dt_min=s.dt_min, dt_max=s.dt_max)

    def _split(self, u, rows):
        """x, B, C as column windows of the conv output u [rows, CD]."""
        s = self.spec
        GN = s.G * s.N
        return (Cols(u, 0, s.I, (rows, s.I)), Cols(u, s.I, GN, (rows, GN)),
                Cols(u, s.I + GN, GN, (rows, GN)))

    @property
    def in_unbiased(self):
        """No in_proj row block (z, xBC, dt) has a bias: the paths that multiply all three at
        once (one GEMM, one mat-vec, the folded conv step) take none."""
        return self.in_z_b is None and self.in_xbc_b is None and self.in_dt_b is None

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        """h = norm(residual) [Bsz*T, D] -> new residual. `state` (Mamba2State): continue from
        it and leave the final state there (inference only)."""
        s = self.spec
        if self.in_unbiased:
            # z [Bsz*T, I], xbc [Bsz*T, CD], dt [Bsz*T, H]: one GEMM on a GPU
            z, xbc, dt = F.linear_many(ctx, h, [self.in_z, self.in_xbc, self.in_dt])
        else:
            z = F.linear(ctx, h, self.in_z, self.in_z_b)                  # [Bsz*T, I]
            xbc = F.linear(ctx, h, self.in_xbc, self.in_xbc_b)            # [Bsz*T, CD]
            dt = F.linear(ctx, h, self.in_dt, self.in_dt_b)               # [Bsz*T, H]
        if state is not None:
            u = F.conv1d_with_state(ctx, xbc, self.conv_w, self.conv_b, Bsz, T, state)
        else:
            u = F.conv1d(ctx, xbc, self.conv_w, self.conv_b, Bsz, T)  # [Bsz*T, CD]
        ctx.done(xbc)
        y = SSD.ssd(ctx, u, s.I, s.G * s.N, dt, self.A_log, self.D, self.dt_bias, Bsz, T,
                    chunk=min(s.chunk, KERNEL_CHUNK),
                    state=(state.ssm if state is not None else None),
                    continue_state=(state is not None and state.tokens_seen > 0),
                    **self.ssd_kw)                                    # [Bsz*T, I]
        ctx.done(u, dt)
        v = SSD.gated_rmsnorm(ctx, y, z, self.norm_w, s.I // s.G, s.eps)
        ctx.done(y, z)
        out = F.residual_linear(ctx, v, self.out_w, self.out_b, residual)
        ctx.done(v)
        return out

    def step(self, batch, h, residual, Bsz, state):
        """One token per sequence: h [Bsz, D]; updates `state` and `residual` in place."""
        s = self.spec
        fused = None
        if self.in_unbiased:   # in_proj's three row blocks and the conv step in one dispatch
            fused = in_proj_conv_step(batch, h, [self.in_z, self.in_xbc, self.in_dt], 1,
                                      self.conv_w, self.conv_b, state.conv)
        if fused is not None:
            z, u, dt = fused
        else:
            if self.in_unbiased:   # the three row blocks of in_proj in one dispatch
                z, xbc, dt = linear_multi(batch, h, [self.in_z, self.in_xbc, self.in_dt])
            else:
                z = linear_forward(batch, h, self.in_z, self.in_z_b)
                xbc = linear_forward(batch, h, self.in_xbc, self.in_xbc_b)
                dt = linear_forward(batch, h, self.in_dt, self.in_dt_b)
            u = conv_ops.conv1d_step(batch, xbc, state.conv, self.conv_w, self.conv_b, silu=True)
            xbc.release()
        x, B, C = self._split(u, Bsz)
        # The one-token path does not clamp dt: transformers' and mamba_ssm's decode paths do
        # not (only their chunked paths do), and decode must continue exactly as they do.
        y = ssd_step(batch, x, dt, self.A_log, B, C, state.ssm, D=self.D,
                     dt_bias=self.dt_bias, n_groups=s.G)                 # [Bsz, I]
        u.release()
        dt.release()
        # the gated norm folded into out_proj's mat-vec where it applies (one group, no bias)
        if not gated_norm_accumulate(batch, y, z, self.norm_w, s.eps, s.G, self.out_w, residual,
                                     self.out_b):
            v, rstd = gated_rmsnorm_forward(batch, y, z, self.norm_w, group_size=s.I // s.G,
                                            eps=s.eps)
            rstd.release()
            linear_accumulate(batch, v, self.out_w, residual, bias=self.out_b)
            v.release()
        y.release()
        z.release()


class Mamba2State:
    """conv [Bsz, CD, K] and ssm [Bsz, H, P, N] of one Mamba-2 layer, owned GPU tensors."""

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        s = spec(cfg)
        self.conv = Tensor(device, (Bsz, s.CD, s.K))
        self.ssm = Tensor(device, (Bsz, s.H, s.P, s.N))
        self.tokens_seen = 0

    def tensors(self):
        return (self.conv, self.ssm)


@register
class Mamba2:
    """The Mamba-2 layer kind."""
    name = "mamba2"
    mbjs_type = 1
    Mixer = Mamba2Mixer
    State = Mamba2State
    spec = staticmethod(spec)

    @staticmethod
    def validate(cfg, source):
        if cfg.model_type not in ("mamba2", "nemotron_h"):
            raise ValueError(f"{source}: mamba2 layers need model_type 'mamba2' or "
                             f"'nemotron_h', not {cfg.model_type!r}")
        s = spec(cfg)
        for name, v in (("num_heads", s.H), ("head_dim", s.P), ("n_groups", s.G),
                        ("chunk_size", s.chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{source}: {name} must be a positive integer, got {v!r}")
        if cfg.model_type == "mamba2" and s.H * s.P != int(cfg.expand * cfg.hidden_size):
            raise ValueError(f"{source}: num_heads * head_dim = {s.H} * {s.P} = {s.H * s.P} must "
                             f"equal expand * hidden_size = {int(cfg.expand * cfg.hidden_size)}")
        if s.H % s.G:
            raise ValueError(f"{source}: num_heads {s.H} is not a multiple of n_groups {s.G}")
        if not (0.0 <= s.dt_min <= s.dt_max):
            raise ValueError(f"{source}: time_step_limit {list(cfg.time_step_limit)} must be "
                             "[low, high] with 0 <= low <= high")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        rows = s.I + s.CD + s.H
        out = {"dt_bias": (s.H,), "A_log": (s.H,), "D": (s.H,), "conv1d.weight": (s.CD, 1, s.K)}
        if s.use_conv_bias:
            out["conv1d.bias"] = (s.CD,)
        out["in_proj.weight"] = (rows, s.D)
        if s.use_bias:
            out["in_proj.bias"] = (rows,)
        out["norm.weight"] = (s.I,)
        out["out_proj.weight"] = (s.D, s.I)
        if s.use_bias:
            out["out_proj.bias"] = (s.D,)
        return out

    decode_param_packs = staticmethod(conv_param_packs)

    @staticmethod
    def pieces(cfg, rel, shape):
        s = spec(cfg)
        rest = tuple(shape[1:])
        if rel in ("in_proj.weight", "in_proj.bias"):
            a, b = s.I, s.I + s.CD
            return [(rel + "#z", 0, a, (a,) + rest), (rel + "#xBC", a, b, (s.CD,) + rest),
                    (rel + "#dt", b, b + s.H, (s.H,) + rest)]
        if rel == "conv1d.weight":
            return conv_weight(rel, shape)
        return whole(rel, shape)

    @staticmethod
    def init_rule(cfg, rel, shape):
        """transformers' Mamba2 init: A_log = log(1..H), D = 1, dt_bias = softplus^-1 of a
        log-uniform dt in [time_step_min, time_step_max] floored; nn.Linear / nn.Conv1d
        defaults U(+-1/sqrt(fan_in)) (out_proj / sqrt(n_layer) when rescale_prenorm_residual);
        norm 1; biases 0."""
        s = spec(cfg)
        if rel == "A_log":
            return "s4d_alog", 0.0, s.H
        if rel in ("D", "norm.weight"):
            return "const", 1.0, 0
        if rel == "dt_bias":
            return "dt_bias", 0.0, 0
        if rel in ("conv1d.weight", "conv1d.bias"):
            return "uniform", 1.0 / math.sqrt(s.K), 0
        if rel in ("in_proj.bias", "out_proj.bias"):
            return "const", 0.0, 0
        if rel == "in_proj.weight":
            return "uniform", 1.0 / math.sqrt(s.D), 0
        if rel == "out_proj.weight":
            a = 1.0 / math.sqrt(s.I)
            if cfg.rescale_prenorm_residual:
                a /= math.sqrt(cfg.num_hidden_layers)
            return "uniform", a, 0
        raise ValueError(f"no initialisation rule for mamba2 tensor {rel}")

    @staticmethod
    def wsla_pieces(cfg):
        """WSLA trains a kind's B/C projection alone; Mamba-2's B/C rows are rows
        [I, I + 2GN) of in_proj's x|B|C piece (the conv reads the block as one tensor), so
        they train under a row mask (py_engine/train/wsla.py)."""
        s = spec(cfg)
        return (("in_proj.weight#xBC", s.I, s.I + 2 * s.G * s.N),)

    @staticmethod
    def train_floats(cfg, Bsz, T):
        """Floats a layer keeps for its backward (the memory estimate): z, xBC, u, dt, y, the
        normed v, and the SSD chunk-start states [Bsz, nc, H, P, N]."""
        s = spec(cfg)
        rows = Bsz * T
        nc = -(-T // s.chunk)
        return rows * (3 * s.I + 2 * s.CD + s.H) + Bsz * nc * s.H * s.P * s.N

    hint = staticmethod(bias_hint)
