"""Differentiable Mamba-2 ops: the SSD scan and the gated, grouped RMSNorm.

Forward kernels are py_engine/ops/ssd.py and py_engine/ops/gated_rmsnorm.py; backward rules
use py_engine/ops/ssd_backward.py and gated_rmsnorm_backward. Conventions as in
py_engine/autograd/functional.py (ctx.tape None = inference, nothing saved).
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops.conv1d import Cols
from py_engine.ops.gated_rmsnorm import gated_rmsnorm_backward, gated_rmsnorm_forward
from py_engine.ops.ssd import ssd_forward


def ssd(ctx, u, I, GN, dt, A_log, D, dt_bias, Bsz, T, *, n_groups, chunk, dt_min, dt_max,
        state=None, continue_state=False):
    """SSD over the conv output u [Bsz*T, I + 2GN] = [x | B | C] and dt [Bsz*T, H] (raw) ->
    y [Bsz*T, I] (with the D skip, no gate).

    state: [Bsz, H, P, N] tensor that receives the final state (inference), continuing from
    it when `continue_state`; None: start from zeros and drop the final state."""
    H = A_log.shape[0]
    CD = I + 2 * GN
    x = Cols(u, 0, I, (Bsz, T, I))
    B = Cols(u, I, GN, (Bsz, T, GN))
    C = Cols(u, I + GN, GN, (Bsz, T, GN))
    dts = dt.view((Bsz, T, H))
    training = ctx.tape is not None
    kw = dict(n_groups=n_groups, dt_min=dt_min, dt_max=dt_max)
    y, h_last, saved = ssd_forward(ctx.batch, x, dts, A_log, B, C, D=D, dt_bias=dt_bias,
                                   chunk=chunk, h0=state if continue_state else None,
                                   h_out=state, save=training, **kw)
    if state is None:
        h_last.release()
    y.shape = (Bsz * T, I)
    if not training:
        return y

    def rule(batch, tape):
        from py_engine.ops.ssd_backward import ssd_backward
        g = tape.pop(y)
        if g is None:
            saved.release()
            return
        du = Tensor(batch.device, (Bsz * T, CD))
        out = {"dx": Cols(du, 0, I, (Bsz, T, I)), "dB": Cols(du, I, GN, (Bsz, T, GN)),
               "dC": Cols(du, I + GN, GN, (Bsz, T, GN))}
        grads = ssd_backward(batch, g.view((Bsz, T, I)), x, dts, A_log, B, C, hc=saved.hc,
                             chunk=saved.chunk, D=D, dt_bias=dt_bias, grads=out, **kw)
        saved.release()
        g.release()
        tape.accumulate(batch, u, du)
        ddt = grads["ddt"]
        ddt.shape = (Bsz * T, H)
        tape.accumulate(batch, dt, ddt)
        tape.accumulate(batch, A_log, grads["dA_log"])
        if D is not None:
            tape.accumulate(batch, D, grads["dD"])
        if dt_bias is not None:
            tape.accumulate(batch, dt_bias, grads["ddt_bias"])
    ctx.tape.record(rule)
    return y


def gated_rmsnorm(ctx, y, z, w, group_size, eps):
    """v = y * silu(z), RMS-normalised per group of `group_size` channels, times w."""
    v, rstd = gated_rmsnorm_forward(ctx.batch, y, z, w, group_size=group_size, eps=eps)
    if ctx.tape is None:
        rstd.release()
        return v
    ctx.tape.keep(rstd)

    def rule(batch, tape):
        g = tape.pop(v)
        if g is None:
            return
        pg = tape.param_grad(w)
        scratch = None
        if pg is None:
            scratch = pg = Tensor(batch.device, tuple(w.shape))
        dy, dz, _ = gated_rmsnorm_backward(batch, g, y, z, w, rstd, group_size=group_size,
                                           eps=eps, dw=pg, accumulate_dw=scratch is None)
        if scratch is not None:
            scratch.release()
        g.release()
        tape.accumulate(batch, y, dy)
        tape.accumulate(batch, z, dz)
    ctx.tape.record(rule)
    return v
