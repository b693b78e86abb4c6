"""Differentiable causal attention (py_engine/ops/attention.py).

attention: training / fresh prefill (no cache); saves the row logsumexp for the backward.
attention_cached: inference prefill that writes k/v into a KV cache at slots [start, start+T)
and attends over everything cached (no backward: decode state is never trained through).
"""
from py_engine.ops.attention import attention_backward, attention_prefill


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
