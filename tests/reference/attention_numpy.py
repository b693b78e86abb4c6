"""Float64 numpy reference of causal grouped-query attention (shaders/attention_*.wgsl).

The oracle the WGSL kernels of py_engine/ops/attention.py are tested against; pure numpy, float64.
Checked against torch's scaled_dot_product_attention and transformers' NemotronH
eager_attention_forward in tests/browser/test_kernels_attention.py (host tests).

Shapes (the engine's layout: token rows, heads flattened head-major into the last dim)
-------------------------------------------------------------------------------------
* ``q``       [Bsz, T, H*Dh]     query head h is columns h*Dh .. h*Dh+Dh-1
* ``k, v``    [Bsz, T, KVH*Dh]   query head h reads kv head h // (H / KVH)
* ``past_k, past_v`` [Bsz, KVH, P, Dh]  keys/values already in the cache (slots 0 .. P-1)
* ``o``       [Bsz, T, H*Dh];  ``lse`` [Bsz, H, T] (row logsumexp of the scaled scores)

Math: S[t, s] = scale q_t . k_s for s <= P + t (query t sits at slot P + t), P = softmax over
s, o_t = sum_s P[t, s] v_s; scale defaults to Dh^-0.5 (NemotronH: no RoPE).
Backward (no cache): dP = do v^T, D_t = do_t . o_t, dS = P (dP - D_t),
dq = scale dS k, dk = scale dS^T q, dv = P^T do, dk/dv summed over the heads of a group.
"""
import numpy as np


def _heads(a, n, Dh):
    """[Bsz, T, n*Dh] -> [Bsz, n, T, Dh]"""
    Bsz, T, _ = a.shape
    return a.reshape(Bsz, T, n, Dh).transpose(0, 2, 1, 3)


def _rows(a):
    """[Bsz, n, T, Dh] -> [Bsz, T, n*Dh]"""
    Bsz, n, T, Dh = a.shape
    return a.transpose(0, 2, 1, 3).reshape(Bsz, T, n * Dh)


def _expand(kv, group):
    return np.repeat(kv, group, axis=1)   # kv head g serves query heads g*group .. g*group+group-1


def attention(q, k, v, n_heads, n_kv_heads, scale=None, past_k=None, past_v=None):
    """-> (o [Bsz, T, H*Dh], lse [Bsz, H, T]); with past_k/v, query t attends slots 0 .. P+t."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    H, KVH = n_heads, n_kv_heads
    Dh = q.shape[-1] // H
    scale = Dh ** -0.5 if scale is None else scale
    Q, K, V = _heads(q, H, Dh), _heads(k, KVH, Dh), _heads(v, KVH, Dh)
    P = 0
    if past_k is not None:
        P = past_k.shape[2]
        K = np.concatenate([np.asarray(past_k, np.float64), K], axis=2)
        V = np.concatenate([np.asarray(past_v, np.float64), V], axis=2)
    K, V = _expand(K, H // KVH), _expand(V, H // KVH)
    T, S = Q.shape[2], K.shape[2]
    s = np.einsum("bhtd,bhsd->bhts", Q, K) * scale
    mask = np.arange(S)[None, :] <= (P + np.arange(T))[:, None]
    s = np.where(mask, s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    l = e.sum(-1, keepdims=True)
    o = np.einsum("bhts,bhsd->bhtd", e / l, V)
    return _rows(o), (m + np.log(l))[..., 0]


def attention_backward(do, q, k, v, n_heads, n_kv_heads, scale=None):
    """-> (dq [Bsz, T, H*Dh], dk, dv [Bsz, T, KVH*Dh]) of causal attention without a cache."""
    do, q, k, v = (np.asarray(a, np.float64) for a in (do, q, k, v))
    H, KVH = n_heads, n_kv_heads
    Dh = q.shape[-1] // H
    G = H // KVH
    scale = Dh ** -0.5 if scale is None else scale
    Q, dO = _heads(q, H, Dh), _heads(do, H, Dh)
    K, V = _expand(_heads(k, KVH, Dh), G), _expand(_heads(v, KVH, Dh), G)
    T = Q.shape[2]
    s = np.einsum("bhtd,bhsd->bhts", Q, K) * scale
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    P = np.exp(s - s.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    O = np.einsum("bhts,bhsd->bhtd", P, V)
    dP = np.einsum("bhtd,bhsd->bhts", dO, V)
    Dt = (dO * O).sum(-1, keepdims=True)
    dS = P * (dP - Dt)
    dQ = scale * np.einsum("bhts,bhsd->bhtd", dS, K)
    dK = scale * np.einsum("bhts,bhtd->bhsd", dS, Q)
    dV = np.einsum("bhts,bhtd->bhsd", P, dO)
    Bsz = q.shape[0]
    dK = dK.reshape(Bsz, KVH, G, T, Dh).sum(2)    # a group's query heads share the kv head
    dV = dV.reshape(Bsz, KVH, G, T, Dh).sum(2)
    return _rows(dQ), _rows(dK), _rows(dV)


def cache_of(k, n_kv_heads, Tmax):
    """k [Bsz, T, KVH*Dh] -> the cache [Bsz, KVH, Tmax, Dh] holding it in slots 0 .. T-1."""
    k = np.asarray(k, np.float64)
    Bsz, T, W = k.shape
    Dh = W // n_kv_heads
    c = np.zeros((Bsz, n_kv_heads, Tmax, Dh))
    c[:, :, :T] = _heads(k, n_kv_heads, Dh)
    return c
