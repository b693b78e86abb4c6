"""Differentiable sequence ops for bidirectional layers (py_engine/nn/bidirectional.py).

    reverse(ctx, x, Bsz, T)            y[b, t] = x[b, T-1-t]               [Bsz*T, C]
    concat_columns(ctx, a, b, Bsz, T)  [a | b]                              [Bsz*T, Ca + Cb]
    mean_merge(ctx, residual, a, b)    residual + (a + b) / 2               [Bsz*T, C]
Backward rules: reversal is its own adjoint; a concatenation's gradient is its two column
windows; the mean hands g to the residual and g / 2 to each branch.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops import sequence as seq


def reverse(ctx, x, Bsz, T):
    y = seq.reverse(ctx.batch, x, Bsz, T)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(y)
            if g is None:
                return
            if tape.needs_grad(x):
                tape.accumulate(batch, x, seq.reverse(batch, g, Bsz, T))
            g.release()
        ctx.tape.record(rule)
    return y


def concat_columns(ctx, a, b, Bsz, T):
    Ca, Cb = a.shape[-1], b.shape[-1]
    out = Tensor(ctx.device, (Bsz * T, Ca + Cb))
    seq.copy_columns(ctx.batch, a, out, Bsz, T, Ca, dst_col=0)
    seq.copy_columns(ctx.batch, b, out, Bsz, T, Cb, dst_col=Ca)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(out)
            if g is None:
                return
            for part, col, C in ((a, 0, Ca), (b, Ca, Cb)):
                if tape.needs_grad(part):
                    gp = Tensor(batch.device, (Bsz * T, C))
                    seq.copy_columns(batch, g, gp, Bsz, T, C, src_col=col)
                    tape.accumulate(batch, part, gp)
            g.release()
        ctx.tape.record(rule)
    return out


def mean_merge(ctx, residual, a, b):
    """residual + 0.5 * (a + b): burn-mamba's `OutputMerge::Mean` plus the skip connection."""
    out = ew.scale(ctx.batch, a, 0.5)
    ew.scale(ctx.batch, b, 0.5, out=out, accumulate=True)
    ew.accumulate(ctx.batch, out, residual)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(out)
            if g is None:
                return
            for branch in (a, b):
                if tape.needs_grad(branch):
                    tape.accumulate(batch, branch, ew.scale(batch, g, 0.5))
            tape.accumulate(batch, residual, g)     # ownership of g passes to the residual
        ctx.tape.record(rule)
    return out
