"""Differentiable Mamba-3 ops: the scan, SISO and MIMO (py_engine/ops/mamba3.py, backward
py_engine/ops/mamba3_backward.py), a reshape whose gradient flows back to its source, the silu(z)
gate, the per-head RMSNorm before that gate (is_outproj_norm) and the MIMO output (per-rank gate,
optional norm, mimo_o; py_engine/ops/mamba3_mimo.py)."""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops.gated_rmsnorm import gated_rmsnorm_backward, gated_rmsnorm_forward
from py_engine.ops.mamba3 import mamba3_forward
from py_engine.ops.mamba3_mimo import mamba3_mimo_out, mamba3_mimo_out_backward


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
    """y [Bsz*T, H*P] = S q + D v over [Bsz*T, *] inputs (training: from zero states); with
    kw["mimo_x"] (MIMO) y [Bsz*T, R*H*P], one S q_r + D v_r per rank."""
    v3 = lambda t: t.view((Bsz, T, t.shape[-1]))  # noqa: E731
    ins = [v3(t) for t in (x, Bn, Cn, dd_dt, dd_A, trap, angles)]
    training = ctx.tape is not None
    y, saved = mamba3_forward(ctx.batch, *ins, state=state, save=training, **kw)
    y.shape = (Bsz * T, y.shape[-1])     # H*P (SISO) or R*H*P (MIMO: per-rank outputs)
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
        params = [(kw["dt_bias"], "ddt_bias"), (kw["B_bias"], "dB_bias"),
                  (kw["C_bias"], "dC_bias"), (kw["D"], "dD")]
        if kw.get("mimo_x") is not None:
            params.append((kw["mimo_x"], "dmimo_x"))
        for p, key in params:
            d = grads[key]
            d.shape = tuple(p.shape)
            tape.accumulate(batch, p, d)
    ctx.tape.record(rule)
    return y


def _param_accumulate(batch, tape, p, d):
    """Add d into p's gradient (or drop it when p is frozen)."""
    d.shape = tuple(p.shape)
    tape.accumulate(batch, p, d)


def norm_gate(ctx, y, z, w, group_size, eps):
    """RMSNorm of y per group of `group_size` channels, times w, times silu(z) (is_outproj_norm:
    the norm before the gate). y, z [rows, I], w [I] -> [rows, I]."""
    v, rstd = gated_rmsnorm_forward(ctx.batch, y, z, w, group_size=group_size, eps=eps,
                                    norm_before_gate=True)
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
                                           eps=eps, dw=pg, accumulate_dw=scratch is None,
                                           norm_before_gate=True)
        if scratch is not None:
            scratch.release()
        g.release()
        tape.accumulate(batch, y, dy)
        tape.accumulate(batch, z, dz)
    ctx.tape.record(rule)
    return v


def mimo_out(ctx, y, z, mimo_z, mimo_o, norm_w, eps):
    """sum_r mimo_o_r * (y_r, or its per-head RMSNorm * norm_w) * silu(z * mimo_z_r):
    y [rows, R*H*P], z [rows, H*P] -> [rows, H*P] (ops/mamba3_mimo.py)."""
    out = mamba3_mimo_out(ctx.batch, y, z, mimo_z, mimo_o, norm_w, eps)
    if ctx.tape is None:
        return out

    def rule(batch, tape):
        g = tape.pop(out)
        if g is None:
            return
        d = mamba3_mimo_out_backward(batch, g, y, z, mimo_z, mimo_o, norm_w, eps)
        g.release()
        tape.accumulate(batch, y, d["dy"])
        tape.accumulate(batch, z, d["dz"])
        _param_accumulate(batch, tape, mimo_z, d["dmimo_z"])
        _param_accumulate(batch, tape, mimo_o, d["dmimo_o"])
        if norm_w is not None:
            _param_accumulate(batch, tape, norm_w, d["dnorm_w"])
    ctx.tape.record(rule)
    return out
