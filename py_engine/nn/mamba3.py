"""The Mamba-3 mixer (SISO, and MIMO of rank R), as state-spaces' `Mamba3` (mamba_ssm 2.3.x;
float64 reference:
tests/reference/mamba3_numpy.py, which states the math and what could not be checked offline).

Shapes: Bsz sequences of T tokens; activations [Bsz*T, C].  I = expand*D = H heads x P,
G groups, N state, S rotated angle pairs (N * rope_fraction, rounded down to even, / 2).
  h --in_proj--> z [I] | x [I] | B [G*N] | C [G*N] | dd_dt [H] | dd_A [H] | trap [H] | angles [S]
  B, C: RMSNorm over N (B_norm / C_norm weights, eps 1e-5); then per head + B_bias / C_bias,
        rotation by the accumulated angle, the exponential-trapezoidal scan (ops/mamba3.py):
        y = S q + D v
  y * silu(z)   (is_outproj_norm: RMSNorm per head of y * norm.weight, then * silu(z))
  residual + y @ out_proj^T
No conv1d, no A_log. State (decode): angle [Bsz, H, S], ssm [Bsz, H, P, N], k [Bsz, H, N] (the
previous token's rotated k), v [Bsz, H, P].
MIMO (is_mimo, rank R = mimo_rank): B, C are R*G*N wide (rows (r g n)), B_bias / C_bias [H, R, N],
mimo_x / mimo_z / mimo_o [H, R, P]; the scan (ops/mamba3.py with mimo_x) gives y_r for each rank,
ops/mamba3_mimo.py gates each (or head-wise RMSNorm + gate) and contracts with mimo_o; k state
[Bsz, R, H, N].
Training runs through the scan's backward (ops/mamba3_backward.py, SISO and MIMO), the
norm-before-gate backward (ops/gated_rmsnorm.py, norm_before_gate) and the MIMO output's backward
(ops/mamba3_mimo.py); autograd/mamba3.py wraps them.
"""
import math
from dataclasses import dataclass

from py_engine.autograd import functional as F
from py_engine.autograd import mamba3 as M3
from py_engine.gpu.tensor import Tensor, aligned_offsets
from py_engine.nn.registry import register, whole
from py_engine.ops import elementwise as ew
from py_engine.ops.gated_rmsnorm import gated_rmsnorm_forward
from py_engine.ops.linear import (gated_norm_accumulate, linear_accumulate, linear_multi,
                                  linear_pieces, pieces_ok)
from py_engine.ops.mamba3 import mamba3_step, step_folds_bc_norm, step_reads_raw
from py_engine.ops.mamba3_mimo import mamba3_mimo_out
from py_engine.ops.mamba3_mimo_step import fused as mimo_fused, mamba3_mimo_step
from py_engine.ops.rmsnorm import rmsnorm_forward

PIECES = ("z", "x", "B", "C", "dd_dt", "dd_A", "trap", "angles")
# RMSNorm eps of B_norm / C_norm and of the output norm (is_outproj_norm), as the reference's;
# two names for two norms (tests set them apart to show which kernel reads which)
BC_EPS = 1e-5
OUT_EPS = 1e-5


@dataclass(frozen=True)
class Mamba3Spec:
    D: int
    I: int
    H: int
    P: int
    G: int
    N: int
    S: int
    A_floor: float
    heavy_tail: bool
    onorm: bool
    R: int = 1            # MIMO rank (1: SISO)
    mimo: bool = False

    def rows(self):
        """in_proj row counts of each piece, in order."""
        GN = self.R * self.G * self.N
        return (self.I, self.I, GN, GN, self.H, self.H, self.H, self.S)


def spec(cfg):
    I = int(cfg.expand * cfg.hidden_size)
    split = int(cfg.state_size * cfg.rope_fraction)
    split -= split % 2
    return Mamba3Spec(D=cfg.hidden_size, I=I, H=I // cfg.head_dim, P=cfg.head_dim,
                      G=cfg.n_groups, N=cfg.state_size, S=split // 2, A_floor=cfg.A_floor,
                      heavy_tail=cfg.a_heavy_tail, onorm=cfg.is_outproj_norm,
                      R=int(cfg.mimo_rank) if cfg.is_mimo else 1, mimo=bool(cfg.is_mimo))


class Mamba3Mixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.spec = s = spec(cfg)
        self.inp = [w(f"in_proj.weight#{p}") for p in PIECES]
        self.dt_bias, self.D = w("dt_bias"), w("D")
        self.B_bias, self.C_bias = w("B_bias"), w("C_bias")
        self.B_norm, self.C_norm = w("B_norm.weight"), w("C_norm.weight")
        self.norm_w = w("norm.weight")
        self.out_w = w("out_proj.weight")
        self.mimo = [w(n) for n in ("mimo_x", "mimo_z", "mimo_o")] if s.mimo else None
        self.kw = dict(dt_bias=self.dt_bias, B_bias=self.B_bias, C_bias=self.C_bias, D=self.D,
                       n_heads=s.H, n_groups=s.G, S=s.S, A_floor=s.A_floor,
                       heavy_tail=s.heavy_tail)
        # the folded SISO step's parameters (ops/mamba3.step_folds_bc_norm), packed at load
        self.step_params = (self.dt_bias, self.B_bias, self.C_bias, self.D, self.B_norm,
                            self.C_norm)
        if s.mimo:
            self.kw["mimo_x"] = self.mimo[0]
            # ops/mamba3_mimo_step's arguments
            self.mimo_kw = dict(
                weights=dict(dt_bias=self.dt_bias, B_bias=self.B_bias, C_bias=self.C_bias,
                             D=self.D, mimo_x=self.mimo[0], mimo_z=self.mimo[1],
                             mimo_o=self.mimo[2], B_norm=self.B_norm, C_norm=self.C_norm,
                             norm_w=self.norm_w if s.onorm else None),
                S=s.S, A_floor=s.A_floor, heavy_tail=s.heavy_tail, n_heads=s.H, n_groups=s.G,
                eps_bc=BC_EPS, eps_o=OUT_EPS)

    def _norm_bc(self, batch, t, w, rows):
        """RMSNorm over N of each group (and rank) of B (or C): [rows, R*G*N] -> same."""
        s = self.spec
        y, rstd = rmsnorm_forward(batch, t.view((rows * s.R * s.G, s.N)), w, eps=BC_EPS)
        rstd.release()
        y.shape = (rows, s.R * s.G * s.N)
        return y

    def _gate(self, batch, y, z):
        s = self.spec
        if s.mimo:      # y [rows, R*I]: per-rank gate (or head-wise norm + gate), mimo_o
            return mamba3_mimo_out(batch, y, z, self.mimo[1], self.mimo[2],
                                   self.norm_w if s.onorm else None, OUT_EPS)
        if s.onorm:
            v, rstd = gated_rmsnorm_forward(batch, y, z, self.norm_w, group_size=s.P, eps=OUT_EPS,
                                            norm_before_gate=True)
            rstd.release()
            return v
        g = ew.silu(batch, z)
        v = ew.mul(batch, y, g)
        g.release()
        return v

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        s = self.spec
        rows = Bsz * T
        # the eight in_proj row blocks in three GEMMs on a GPU (linear_many takes up to 3)
        z, x, B = F.linear_many(ctx, h, self.inp[0:3])
        C, dd_dt, dd_A = F.linear_many(ctx, h, self.inp[3:6])
        trap, ang = F.linear_many(ctx, h, self.inp[6:8])
        Bo, Bn = self._norm_bc_d(ctx, B, self.B_norm, rows)
        Co, Cn = self._norm_bc_d(ctx, C, self.C_norm, rows)
        ctx.done(B, C)
        y = M3.scan(ctx, x, Bn, Cn, dd_dt, dd_A, trap, ang, Bsz, T, kw=self.kw, state=state)
        ctx.done(x, Bo, Co, dd_dt, dd_A, trap, ang)      # Bo/Co own what the views Bn/Cn show
        if s.mimo:      # y [rows, R*I]: per-rank gate (or head-wise norm + gate), mimo_o
            v = M3.mimo_out(ctx, y, z, self.mimo[1], self.mimo[2],
                            self.norm_w if s.onorm else None, OUT_EPS)
        elif s.onorm:
            v = M3.norm_gate(ctx, y, z, self.norm_w, s.P, OUT_EPS)
        else:
            v = M3.silu_gate(ctx, y, z)
        ctx.done(y, z)
        out = F.residual_linear(ctx, v, self.out_w, None, residual)
        ctx.done(v)
        return out

    def _norm_bc_d(self, ctx, t, w, rows):
        """Differentiable RMSNorm over N of each group of t [rows, G*N] -> (the owning tensor
        [rows*G, N], a [rows, G*N] view of it; views never release, so the owner is done())."""
        s = self.spec
        n = F.rmsnorm(ctx, M3.view(ctx, t, (rows * s.R * s.G, s.N)), w, BC_EPS)
        return n, M3.view(ctx, n, (rows, s.R * s.G * s.N))

    @staticmethod
    def _views_block(dev, Bsz, widths):
        """One tensor holding outputs [Bsz, n] for n in widths at binding-aligned offsets, and
        those outputs as views of it (they release nothing; the block does). in_proj writes
        them, and the step reads dd_dt, dd_A, trap and angles through one binding
        (ops/mamba3.step_reads_raw; mamba3_step's one_binding)."""
        starts, end = aligned_offsets([4 * Bsz * n for n in widths], dev.align)
        block = Tensor(dev, (end // 4,))
        return block, [Tensor(dev, (Bsz, n), buffer=block.buffer, offset=block.offset + o)
                       for n, o in zip(widths, starts)]

    def step(self, batch, h, residual, Bsz, state):
        w = self.inp
        s = self.spec
        block, views = None, [None] * 4
        if pieces_ok(batch.device, h, w):
            # the eight in_proj row blocks, packed at load (decode_packs), in one mat-vec dispatch
            block, outs = self._views_block(batch.device, Bsz, s.rows())
            z, x, B, C, dd_dt, dd_A, trap, ang = linear_pieces(batch, h, w, outs)
            if (s.mimo and self.B_norm is not None and self.C_norm is not None
                    and mimo_fused(batch.device, s.H, s.R, s.N, s.P, s.S, s.onorm,
                                   self.mimo_kw["weights"])):
                # MIMO: norms, scalars, step and output in one dispatch (3 a layer, not 7;
                # ops/mamba3_mimo_step)
                v = mamba3_mimo_step(batch, dict(zip(PIECES, outs)), state, **self.mimo_kw)
                linear_accumulate(batch, v, self.out_w, residual)
                v.release()
                block.release()
                return
        else:
            # in three (linear_multi takes up to 3)
            if step_reads_raw(batch.device, s.mimo, s.N, s.S):
                block, views = self._views_block(batch.device, Bsz, (s.H, s.H, s.H, s.S))
            z, x, B = linear_multi(batch, h, w[0:3])
            C, dd_dt, dd_A = linear_multi(batch, h, w[3:6], outs=[None, views[0], views[1]])
            trap, ang = linear_multi(batch, h, w[6:8], outs=views[2:])
        if (self.B_norm is not None and self.C_norm is not None
                and step_folds_bc_norm(batch.device, s.mimo, s.N, s.S, self.step_params)):
            # B's and C's norms inside the step (real GPUs, SISO): two dispatches fewer
            Bn, Cn = B, C
            y = mamba3_step(batch, x, B, C, dd_dt, dd_A, trap, ang, state,
                            bc_norm=(self.B_norm, self.C_norm, BC_EPS), **self.kw)
        else:
            Bn = self._norm_bc(batch, B, self.B_norm, Bsz)
            Cn = self._norm_bc(batch, C, self.C_norm, Bsz)
            B.release()
            C.release()
            y = mamba3_step(batch, x, Bn, Cn, dd_dt, dd_A, trap, ang, state, **self.kw)
        for t in (x, Bn, Cn, dd_dt, dd_A, trap, ang):
            t.release()                   # (the block's views release nothing)
        # SISO: the gate (and the out-projection norm, a group a head) folded into out_proj's
        # mat-vec
        folded = not s.mimo and gated_norm_accumulate(
            batch, y, z, self.norm_w if s.onorm else None, OUT_EPS, s.H if s.onorm else 1,
            self.out_w, residual, norm_before_gate=s.onorm)
        if not folded:
            v = self._gate(batch, y, z)
            linear_accumulate(batch, v, self.out_w, residual)
            v.release()
        y.release()
        z.release()
        if block is not None:
            block.release()               # after out_proj: z may be one of its views


class Mamba3State:
    """angle [Bsz, H, S], ssm [Bsz, H, P, N], k [Bsz, H, N] (MIMO: [Bsz, R, H, N]), v [Bsz, H, P]
    of one layer."""

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        s = spec(cfg)
        self.angle = Tensor(device, (Bsz, s.H, s.S))
        self.ssm = Tensor(device, (Bsz, s.H, s.P, s.N))
        self.k = Tensor(device, (Bsz, s.R, s.H, s.N) if s.mimo else (Bsz, s.H, s.N))
        self.v = Tensor(device, (Bsz, s.H, s.P))
        self.tokens_seen = 0

    def tensors(self):
        return (self.angle, self.ssm, self.k, self.v)


@register
class Mamba3:
    name = "mamba3"
    mbjs_type = 16         # ours (17: softplus A; io/mbjs.py); npm's type 2 is a different model
    Mixer = Mamba3Mixer
    State = Mamba3State
    spec = staticmethod(spec)

    @staticmethod
    def validate(cfg, source):
        if cfg.model_type != "mamba3":
            raise ValueError(f"{source}: mamba3 layers need model_type 'mamba3' (a mamba_ssm "
                             f"Mamba3 config), not {cfg.model_type!r}")
        if cfg.rope_fraction not in (0.5, 1.0):
            raise ValueError(f"{source}: rope_fraction must be 0.5 or 1.0, got {cfg.rope_fraction}")
        s = spec(cfg)
        if s.I % s.P:
            raise ValueError(f"{source}: expand * d_model = {s.I} is not a multiple of headdim {s.P}")
        if s.H % s.G:
            raise ValueError(f"{source}: {s.H} heads are not a multiple of ngroups {s.G}")
        if s.S < 1:
            raise ValueError(f"{source}: d_state {s.N} with rope_fraction {cfg.rope_fraction} "
                             "rotates no angle pair")
        if s.mimo and not 1 <= s.R <= 8:
            raise ValueError(f"{source}: mimo_rank {s.R} is outside 1..8 (the MIMO kernels keep "
                             "one accumulator per rank); use a rank of at most 8")
        if s.mimo and s.N % 2:
            raise ValueError(f"{source}: MIMO rotates pairs (i, i + d_state/2), so d_state must "
                             f"be even, got {s.N}")

    @staticmethod
    def tensors(cfg):
        s = spec(cfg)
        out = {"in_proj.weight": (sum(s.rows()), s.D), "dt_bias": (s.H,), "D": (s.H,),
               "B_bias": (s.H, s.R, s.N), "C_bias": (s.H, s.R, s.N), "B_norm.weight": (s.N,),
               "C_norm.weight": (s.N,)}
        if s.mimo:
            out.update({n: (s.H, s.R, s.P) for n in ("mimo_x", "mimo_z", "mimo_o")})
        if s.onorm:
            out["norm.weight"] = (s.I,)
        out["out_proj.weight"] = (s.D, s.I)
        return out

    @staticmethod
    def decode_packs(cfg):
        """in_proj's eight row blocks, side by side in one buffer (ops/weight_pack.py): decode
        multiplies them in one dispatch (linear.pieces_ok) instead of three."""
        return (tuple(f"in_proj.weight#{p}" for p in PIECES),)

    @staticmethod
    def decode_param_packs(cfg):
        """The step kernels' small parameters side by side in one buffer (ops/weight_pack
        .pack_params), read through one binding: MIMO's one-dispatch step binds 8 storage
        buffers with them so (ops/mamba3_mimo_step.STORAGE), where a Mac's Chrome allows 10."""
        s = spec(cfg)
        names = ("dt_bias", "D", "B_bias", "C_bias", "B_norm.weight", "C_norm.weight")
        if s.mimo:
            names += ("mimo_x", "mimo_z", "mimo_o")
        if s.onorm:
            names += ("norm.weight",)
        return (tuple("mixer." + n for n in names),)

    @staticmethod
    def pieces(cfg, rel, shape):
        s = spec(cfg)
        if rel == "in_proj.weight":
            out, r0 = [], 0
            for name, n in zip(PIECES, s.rows()):
                out.append((f"{rel}#{name}", r0, r0 + n, (n, s.D)))
                r0 += n
            return out
        if rel in ("B_bias", "C_bias"):
            return [(rel, 0, shape[0], (s.H, s.R * s.N))]
        return whole(rel, shape)

    @staticmethod
    def init_rule(cfg, rel, shape):
        s = spec(cfg)
        if rel in ("D", "B_norm.weight", "C_norm.weight", "norm.weight", "B_bias", "C_bias"):
            return "const", 1.0, 0
        if rel == "dt_bias":
            return "dt_bias", 0.0, 0
        if rel in ("mimo_x", "mimo_o"):      # mamba_ssm: ones / R (mimo_z: ones)
            return "const", 1.0 / s.R, 0
        if rel == "mimo_z":
            return "const", 1.0, 0
        if rel == "in_proj.weight":
            return "uniform", 1.0 / math.sqrt(s.D), 0
        if rel == "out_proj.weight":
            a = 1.0 / math.sqrt(s.I)
            if cfg.rescale_prenorm_residual:
                a /= math.sqrt(cfg.num_hidden_layers)
            return "uniform", a, 0
        raise ValueError(f"no initialisation rule for mamba3 tensor {rel}")

    @staticmethod
    def hint(cfg, rel):
        if rel == "norm.weight" and not cfg.is_outproj_norm:
            return " (config has is_outproj_norm=false)"
        return ""

    # LoRA's default modules in this kind (py_engine/train/lora.py adds them to DEFAULT_TARGETS):
    # mamba_ssm's Mamba3 calls both projections as modules (self.in_proj(u), self.out_proj(y)),
    # so PEFT's adapters on them take effect there, and stock PEFT has no Mamba-3 model type to
    # refuse out_proj for
    lora_defaults = ("in_proj", "out_proj")

    @staticmethod
    def wsla_pieces(cfg):
        """WSLA trains the B and C projections alone: in_proj's B and C row blocks, each its
        own GPU piece ([R*G*N, D]: MIMO's R ranks included), so no row mask is needed."""
        return ("in_proj.weight#B", "in_proj.weight#C")

    @staticmethod
    def train_floats(cfg, Bsz, T):
        s = spec(cfg)
        return Bsz * T * (3 * s.I + 4 * s.R * s.G * s.N + 3 * s.H + s.S)
