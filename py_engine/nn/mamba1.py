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
`forward` goes through py_engine.train.functional, so the same code trains (with a tape)
and infers (without). `step` is the recurrent decode path (inference only) against
conv_state [Bsz, I, K] (last K pre-conv inputs, newest last) and ssm_state [Bsz, I, N].
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import conv1d as conv_ops
from py_engine.ops import selective_scan as scan_ops
from py_engine.ops.linear import linear_forward, linear_multi, matmul
from py_engine.ops.rmsnorm import rmsnorm_forward
from py_engine.train import functional as F


class Mamba1Mixer:
    def __init__(self, cfg, weights, prefix):
        w = lambda name: weights.get(prefix + name)  # noqa: E731
        self.cfg = cfg
        self.in_x, self.in_z = w("in_proj.weight#x"), w("in_proj.weight#z")
        self.in_x_b, self.in_z_b = w("in_proj.bias#x"), w("in_proj.bias#z")
        self.conv_w, self.conv_b = w("conv1d.weight"), w("conv1d.bias")
        self.x_dt, self.x_B, self.x_C = w("x_proj.weight#dt"), w("x_proj.weight#B"), w("x_proj.weight#C")
        self.dt_w, self.dt_b = w("dt_proj.weight"), w("dt_proj.bias")
        self.A_log, self.D = w("A_log"), w("D")
        self.out_w, self.out_b = w("out_proj.weight"), w("out_proj.bias")
        self.bc_eps = cfg.mixer_rms_eps if cfg.is_falcon else None

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        """h = norm(residual) [Bsz*T, D] -> new residual. `state` (LayerState): continue from
        it and leave the final state there (inference only)."""
        x = F.linear(ctx, h, self.in_x, self.in_x_b)
        z = F.linear(ctx, h, self.in_z, self.in_z_b)
        if state is not None:
            u = self._conv_with_state(ctx, x, Bsz, T, state)
        else:
            u = F.conv1d(ctx, x, self.conv_w, self.conv_b, Bsz, T)
        ctx.done(x)
        dt_low = F.linear(ctx, u, self.x_dt)
        if self.bc_eps is not None:
            normed = F.rmsnorm(ctx, dt_low, None, self.bc_eps)
            ctx.done(dt_low)
            dt_low = normed
        B = F.linear(ctx, u, self.x_B)
        C = F.linear(ctx, u, self.x_C)
        delta = F.linear(ctx, dt_low, self.dt_w)
        ctx.done(dt_low)
        y = F.selective_scan(ctx, u, delta, self.A_log, B, C, self.D, z, self.dt_b, Bsz, T,
                             state=state.ssm if state is not None else None,
                             norm_bc_eps=self.bc_eps)
        ctx.done(u, delta, B, C, z)
        out = F.residual_linear(ctx, y, self.out_w, self.out_b, residual)
        ctx.done(y)
        return out

    def _conv_with_state(self, ctx, x, Bsz, T, state):
        """Inference prefill that continues from and updates the conv state."""
        I = x.shape[-1]
        xs = x.view((Bsz, T, I))
        tmp = Tensor(ctx.device, state.conv.shape)
        u, _ = conv_ops.conv1d_forward(ctx.batch, xs, self.conv_w, self.conv_b, silu=True,
                                       state_in=state.conv if state.tokens_seen else None,
                                       state_out=tmp)
        ctx.batch.copy(tmp.buffer, tmp.offset, state.conv.buffer, state.conv.offset, tmp.nbytes)
        tmp.release()
        u.shape = (Bsz * T, I)
        return u

    def step(self, batch, h, residual, Bsz, state):
        """One token per sequence: h [Bsz, D]; updates `state` and `residual` in place."""
        if self.in_x_b is None:   # x and z halves of in_proj in one dispatch
            x, z = linear_multi(batch, h, [self.in_x, self.in_z])
        else:
            x = linear_forward(batch, h, self.in_x, self.in_x_b)
            z = linear_forward(batch, h, self.in_z, self.in_z_b)
        u = conv_ops.conv1d_step(batch, x, state.conv, self.conv_w, self.conv_b, silu=True)
        x.release()
        dt_low, B, C = linear_multi(batch, u, [self.x_dt, self.x_B, self.x_C])
        if self.bc_eps is not None:
            normed, rstd = rmsnorm_forward(batch, dt_low, None, eps=self.bc_eps)
            rstd.release()
            dt_low.release()
            dt_low = normed
        delta = linear_forward(batch, dt_low, self.dt_w)
        dt_low.release()
        y = scan_ops.selective_scan_step(batch, u, delta, self.A_log, B, C, state.ssm, D=self.D,
                                         z_t=z, dt_bias=self.dt_b, norm_bc_eps=self.bc_eps)
        for t in (u, delta, B, C, z):
            t.release()
        D_, I = self.out_w.shape
        matmul(batch, y, self.out_w, residual, Bsz, D_, I, (I, 1, 1, I), bias=self.out_b,
               accumulate=True)
        y.release()


class LayerState:
    """conv [Bsz, I, K] and ssm [Bsz, I, N] of one Mamba-1 layer, owned GPU tensors."""

    def __init__(self, device, cfg, Bsz=1):
        I, K, N = cfg.intermediate_size, cfg.conv_kernel, cfg.state_size
        self.conv = Tensor(device, (Bsz, I, K))
        self.ssm = Tensor(device, (Bsz, I, N))
        self.tokens_seen = 0

    def tensors(self):
        return (self.conv, self.ssm)
