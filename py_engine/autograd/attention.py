"""Differentiable causal attention (py_engine/ops/attention.py).

attention: training / fresh prefill (no cache); saves the row logsumexp for the backward.
attention_cached: inference prefill that writes k/v into a KV cache at slots [start, start+T)
and attends over everything cached (no backward: decode state is never trained through).
rope: rotary position embedding of q or k (py_engine/ops/rope.py); backward = the inverse
rotation of the incoming gradient (a rotation's transpose), 1 dispatch each way.
"""
from py_engine.ops.attention import attention_backward, attention_prefill
from py_engine.ops.rope import rope_apply


def rope(ctx, x, *, n_heads, head_dim, rot_dim, theta, Bsz, T, start=0):
    """x [Bsz*T, n_heads*head_dim] -> y, rows at positions start + t."""
    kw = dict(n_heads=n_heads, head_dim=head_dim, rot_dim=rot_dim, theta=theta, Bsz=Bsz, T=T,
              start=start)
    y = rope_apply(ctx.batch, x, **kw)
    if ctx.tape is None:
        return y

    def rule(batch, tape):
        g = tape.pop(y)
        if g is None:
            return
        dx = rope_apply(batch, g, inverse=True, **kw)
        g.release()
        tape.accumulate(batch, x, dx)
    ctx.tape.record(rule)
    return y


def attention(ctx, q, k, v, Bsz, T, *, n_heads, n_kv_heads):
    training = ctx.tape is not None
    o, lse = attention_prefill(ctx.batch, q, k, v, n_heads=n_heads, n_kv_heads=n_kv_heads,
                               Bsz=Bsz, T=T, save=training)
    if not training:
        return o
    ctx.tape.keep(lse)

    def rule(batch, tape):
        g = tape.pop(o)
        if g is None:
            return
        grads = attention_backward(batch, g, q, k, v, o, lse, n_heads=n_heads,
                                   n_kv_heads=n_kv_heads, Bsz=Bsz, T=T)
        g.release()
        tape.accumulate(batch, q, grads["dq"])
        tape.accumulate(batch, k, grads["dk"])
        tape.accumulate(batch, v, grads["dv"])
    ctx.tape.record(rule)
    return o


def attention_cached(ctx, q, k, v, cache_k, cache_v, start, Bsz, T, *, n_heads, n_kv_heads):
    if ctx.tape is not None:
        raise ValueError("training runs without a decode state; pass state=None")
    o, _ = attention_prefill(ctx.batch, q, k, v, n_heads=n_heads, n_kv_heads=n_kv_heads,
                             Bsz=Bsz, T=T, cache_k=cache_k, cache_v=cache_v, start=start)
    return o
