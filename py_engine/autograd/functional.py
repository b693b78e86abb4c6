"""Differentiable ops: each runs its forward kernels and, given a tape, records its backward.

`ctx` carries the batch being recorded and the tape (None = inference, nothing saved).
`ctx.done(*tensors)` is how model code says "I no longer need these": released at once in
inference, kept until backward when a tape is recording (backward rules read them).
Shapes are those of the underlying ops (py_engine/ops/*).
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import conv1d as conv_ops
from py_engine.ops.cross_entropy import cross_entropy_backward, cross_entropy_forward
from py_engine.ops.elementwise import add
from py_engine.ops.embedding import embedding_backward, embedding_forward
from py_engine.ops.elementwise import scale
from py_engine.ops.linear import (linear_accumulate, linear_backward_bias, linear_backward_input,
                                  linear_backward_weight, linear_forward, linear_multi,
                                  raw_linear)
from py_engine.ops.lora import adapter_of
from py_engine.ops.rmsnorm import rmsnorm_backward, rmsnorm_forward


class Ctx:
    def __init__(self, batch, tape=None):
        self.batch = batch
        self.tape = tape
        self.device = batch.device

    def done(self, *tensors):
        for t in tensors:
            if t is None:
                continue
            if self.tape is None:
                t.release()
            else:
                self.tape.keep(t)


def _blocks(w):
    """[(r0, r1, Tensor)]: the row blocks of a weight held as RowChunks (py_engine/gpu/
    row_chunks.py; each block is a parameter of its own), else the whole weight as one."""
    from py_engine.gpu.row_chunks import RowChunks
    return w.parts if isinstance(w, RowChunks) else [(0, w.shape[0], w)]


def _param_grad(batch, tape, p, compute):
    """compute(out, accumulate) writes p's gradient: straight into its persistent buffer."""
    pg = tape.param_grad(p)
    if pg is not None:
        compute(pg, True)


def embedding(ctx, ids, weight):
    """ids u32 [T] -> [T, D]."""
    y = embedding_forward(ctx.batch, ids, weight)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(y)
            if g is None:
                return
            for r0, _, w in _blocks(weight):   # a table held as row blocks: each its own
                pg = tape.param_grad(w)
                if pg is not None:
                    embedding_backward(batch, ids, g, pg, row0=r0)   # scatter-adds into pg
            g.release()
        ctx.tape.record(rule)
    return y


def rmsnorm(ctx, x, w, eps):
    """Row RMSNorm; w None = weightless."""
    y, rstd = rmsnorm_forward(ctx.batch, x, w, eps=eps)
    if ctx.tape is None:
        rstd.release()
        return y
    ctx.tape.keep(rstd)

    def rule(batch, tape):
        g = tape.pop(y)
        if g is None:
            return
        pg = tape.param_grad(w) if w is not None else None
        if pg is not None:
            dx, _ = rmsnorm_backward(batch, g, x, rstd, w, dw=pg, accumulate_dw=True)
        else:
            dx = _rmsnorm_dx_only(batch, g, x, rstd, w)
        tape.accumulate(batch, x, dx)
        g.release()
    ctx.tape.record(rule)
    return y


def _rmsnorm_dx_only(batch, g, x, rstd, w):
    if w is None:
        dx, _ = rmsnorm_backward(batch, g, x, rstd, None)
        return dx
    scratch = Tensor(batch.device, (x.shape[-1],))
    dx, _ = rmsnorm_backward(batch, g, x, rstd, w, dw=scratch)
    scratch.release()
    return dx


def linear(ctx, x, w, b=None):
    """x [M, K] @ w[N, K]^T + b -> [M, N]."""
    y = linear_forward(ctx.batch, x, w, b)
    _record_linear(ctx, y, x, w, b)
    return y


def linear_many(ctx, x, ws):
    """[x [M, K] @ w^T for w in ws] (2-3 bias-free weights sharing K): on a real GPU one GEMM
    over the weights side by side (ops.linear.linear_multi); each output's gradient is the
    separate linear's."""
    ys = linear_multi(ctx.batch, x, ws)
    for y, w in zip(ys, ws):
        _record_linear(ctx, y, x, w, None)
    return ys


def _record_linear(ctx, y, x, w, b):
    """With a tape: y = x @ w^T + b's backward."""
    if ctx.tape is None:
        return

    def rule(batch, tape):
        g = tape.pop(y)
        if g is None:
            return
        _linear_grads(batch, tape, g, x, w, b)
        g.release()
    ctx.tape.record(rule)


def _linear_grads(batch, tape, g, x, w, b):
    if tape.needs_grad(x):
        tape.accumulate(batch, x, linear_backward_input(batch, g, w))
    blocks = _blocks(w)
    if blocks[0][2] is w:
        _param_grad(batch, tape, w, lambda out, acc: linear_backward_weight(batch, g, x, out=out, accumulate=acc))
    else:
        from py_engine.ops import row_chunks
        from py_engine.ops._common import rows_of
        for r0, r1, part in blocks:
            _param_grad(batch, tape, part, lambda out, acc, r0=r0, r1=r1: row_chunks.backward_weight(
                batch, g, x, r0, r1, out, rows_of(g), accumulate=acc))
    if b is not None:
        _param_grad(batch, tape, b, lambda out, acc: linear_backward_bias(batch, g, out=out, accumulate=acc))
    ad = adapter_of(batch.device, w)
    if ad is not None:
        _lora_grads(batch, tape, g, x, ad)


def _lora_grads(batch, tape, g, x, ad):
    """The LoRA branch y += s (x A^T) B^T:  gb = s g B [M, r];  dx += gb A;  dA += gb^T x;
    dB += g^T (s x A^T). The forward's x A^T is recomputed (r columns: cheap)."""
    gB = linear_backward_input(batch, g, ad.B)              # g @ B  [M, r]
    gb = scale(batch, gB, ad.s)
    gB.release()
    if tape.needs_grad(x):
        tape.accumulate(batch, x, linear_backward_input(batch, gb, ad.A))
    _param_grad(batch, tape, ad.A, lambda out, acc: linear_backward_weight(batch, gb, x, out=out, accumulate=acc))
    if tape.param_grad(ad.B) is not None:
        xa = raw_linear(batch, x, ad.A)
        xs = scale(batch, xa, ad.s)
        xa.release()
        _param_grad(batch, tape, ad.B, lambda out, acc: linear_backward_weight(batch, g, xs, out=out, accumulate=acc))
        xs.release()
    gb.release()


def residual_linear(ctx, y, w, b, residual):
    """residual + y @ w^T + b. Inference: in place (one matmul that accumulates).
    Training: a new tensor, so the old residual stays intact for the norm that read it."""
    if ctx.tape is None:
        linear_accumulate(ctx.batch, y, w, residual, bias=b)
        return residual
    branch = linear_forward(ctx.batch, y, w, b)
    out = add(ctx.batch, residual, branch)
    ctx.tape.keep(branch)

    def rule(batch, tape):
        g = tape.pop(out)
        if g is None:
            return
        _linear_grads(batch, tape, g, y, w, b)
        tape.accumulate(batch, residual, g)   # ownership of g passes to the residual
    ctx.tape.record(rule)
    return out


def conv1d(ctx, x, w, b, Bsz, T, state_out=None):
    """Causal depthwise conv + SiLU over x [Bsz*T, I] -> u [Bsz*T, I] (state_out: final state)."""
    I = x.shape[-1]
    xs = x.view((Bsz, T, I))
    u, _ = conv_ops.conv1d_forward(ctx.batch, xs, w, b, silu=True, state_out=state_out)
    u.shape = (Bsz * T, I)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(u)
            if g is None:
                return
            gs = g.view((Bsz, T, I))
            dx, dw, db = conv_ops.conv1d_backward(batch, gs, xs, w, b, silu=True)
            dx.shape = (Bsz * T, I)
            tape.accumulate(batch, x, dx)
            tape.accumulate(batch, w, dw)
            tape.accumulate(batch, b, db)
            g.release()
        ctx.tape.record(rule)
    return u


def conv1d_with_state(ctx, x, w, b, Bsz, T, state):
    """Inference prefill of the causal conv + SiLU over x [Bsz*T, C] that continues from and
    updates `state.conv` [Bsz, C, K] (history only when state.tokens_seen > 0)."""
    C = x.shape[-1]
    xs = x.view((Bsz, T, C))
    tmp = Tensor(ctx.device, state.conv.shape)
    u, _ = conv_ops.conv1d_forward(ctx.batch, xs, w, b, silu=True,
                                   state_in=state.conv if state.tokens_seen else None,
                                   state_out=tmp)
    ctx.batch.copy(tmp.buffer, tmp.offset, state.conv.buffer, state.conv.offset, tmp.nbytes)
    tmp.release()
    u.shape = (Bsz * T, C)
    return u


def cross_entropy(ctx, logits, targets):
    """Mean CE over non-ignored targets -> loss Tensor [2] = (mean, n_valid)."""
    loss, stats = cross_entropy_forward(ctx.batch, logits, targets)
    if ctx.tape is None:
        stats.release()
        return loss
    ctx.tape.keep(stats)

    def rule(batch, tape, scale=1.0):
        tape.accumulate(batch, logits, cross_entropy_backward(batch, logits, targets, stats, loss, scale))
    ctx.tape.record(rule)
    return loss


def selective_scan(ctx, u, delta, A_log, B, C, D, z, dt_bias, Bsz, T, state=None,
                   norm_bc_eps=None):
    """The Mamba-1 scan over [Bsz*T, *] activations -> y [Bsz*T, I] (gated by silu(z)).

    state: a [Bsz, I, N] tensor to start from and to leave the final state in (inference),
    or None (zeros; the final state is dropped)."""
    from py_engine.ops import selective_scan as scan_ops
    I, N = A_log.shape
    shp = lambda t, c: t.view((Bsz, T, c))  # noqa: E731
    us, ds, Bs, Cs, zs = shp(u, I), shp(delta, I), shp(B, N), shp(C, N), shp(z, I)
    training = ctx.tape is not None
    y, h_last, saved = scan_ops.selective_scan_forward(
        ctx.batch, us, ds, A_log, Bs, Cs, D=D, z=zs, dt_bias=dt_bias, h0=state, h_out=state,
        save=training, norm_bc_eps=norm_bc_eps)
    if state is None:
        h_last.release()
    y.shape = (Bsz * T, I)
    if not training:
        return y

    def rule(batch, tape):
        g = tape.pop(y)
        if g is None:
            saved.release()
            return
        grads = scan_ops.selective_scan_backward(
            batch, shp(g, I), us, ds, A_log, Bs, Cs, D=D, z=zs, dt_bias=dt_bias, saved=saved,
            norm_bc_eps=norm_bc_eps)
        saved.release()
        g.release()
        for src, key, shape in ((u, "du", (Bsz * T, I)), (delta, "ddelta", (Bsz * T, I)),
                                (B, "dB", (Bsz * T, N)), (C, "dC", (Bsz * T, N)),
                                (z, "dz", (Bsz * T, I))):
            t = grads[key]
            t.shape = shape
            tape.accumulate(batch, src, t)
        tape.accumulate(batch, A_log, grads["dA_log"])
        tape.accumulate(batch, D, grads["dD"])
        tape.accumulate(batch, dt_bias, grads["ddt_bias"])
    ctx.tape.record(rule)
    return y
