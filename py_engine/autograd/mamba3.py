"""Differentiable Mamba-3 ops: the SISO scan (py_engine/ops/mamba3.py, backward
py_engine/ops/mamba3_backward.py), a reshape whose gradient flows back to its source, and the
silu(z) gate."""
from py_engine.ops import elementwise as ew
from py_engine.ops.mamba3 import mamba3_forward


def view(ctx, t, shape):
    """An alias of `t` with another shape; its gradient is `t`'s (same bytes)."""
    v = t.view(shape)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(v)
            if g is None:
                return
            g.shape = tuple(t.shape)
            tape.accumulate(batch, t, g)
        ctx.tape.record(rule)
    return v


def silu_gate(ctx, y, z):
    """y * silu(z)."""
    s = ew.silu(ctx.batch, z)
    out = ew.mul(ctx.batch, y, s)
    if ctx.tape is None:
        s.release()
        return out
    ctx.tape.keep(s)

    def rule(batch, tape):
        g = tape.pop(out)
        if g is None:
            return
        if tape.needs_grad(y):
            tape.accumulate(batch, y, ew.mul(batch, g, s))
        if tape.needs_grad(z):
            gy = ew.mul(batch, g, y)
            tape.accumulate(batch, z, ew.silu_backward(batch, z, gy))
            gy.release()
        g.release()
    ctx.tape.record(rule)
    return out


def scan(ctx, x, Bn, Cn, dd_dt, dd_A, trap, angles, Bsz, T, *, kw, state=None):
    """y [Bsz*T, H*P] = S q + D v over [Bsz*T, *] inputs (training: from zero states)."""
    v3 = lambda t: t.view((Bsz, T, t.shape[-1]))  # noqa: E731
    ins = [v3(t) for t in (x, Bn, Cn, dd_dt, dd_A, trap, angles)]
    training = ctx.tape is not None
    y, saved = mamba3_forward(ctx.batch, *ins, state=state, save=training, **kw)
    y.shape = (Bsz * T, x.shape[-1])
    if not training:
        return y

    def rule(batch, tape):
        from py_engine.ops.mamba3_backward import mamba3_backward
        g = tape.pop(y)
        if g is None:
            saved.release()
            return
        grads = mamba3_backward(batch, g.view((Bsz, T, g.shape[-1])), *ins, saved, **kw)
        saved.release()
        g.release()
        for src, key in zip((x, Bn, Cn, dd_dt, dd_A, trap, angles),
                            ("dx", "dBn", "dCn", "ddd_dt", "ddd_A", "dtrap", "dangles")):
            d = grads[key]
            d.shape = tuple(src.shape)
            tape.accumulate(batch, src, d)
        for p, key in ((kw["dt_bias"], "ddt_bias"), (kw["B_bias"], "dB_bias"),
                       (kw["C_bias"], "dC_bias"), (kw["D"], "dD")):
            d = grads[key]
            d.shape = tuple(p.shape)
            tape.accumulate(batch, p, d)
    ctx.tape.record(rule)
    return y
