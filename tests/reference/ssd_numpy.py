"""Float64 numpy reference of the Mamba-2 SSD scan (shaders/ssd_forward.wgsl, ssd_step.wgsl).

The oracle the WGSL kernels of py_engine/ops/ssd.py are tested against; pure numpy, float64.

Shapes (the engine's layout: token-major, channels last, heads flattened into the last dim)
-------------------------------------------------------------------------------------------
* ``x``     [Bsz, T, H*P]   head h is columns h*P .. h*P+P-1
* ``dt``    [Bsz, T, H]     raw: before dt_bias and softplus
* ``B, C``  [Bsz, T, G*N]   group g is columns g*N .. g*N+N-1; head h reads group h // (H/G)
* ``A_log, D, dt_bias`` [H]
* states    [Bsz, H, P, N]  (transformers' ``ssm_states`` layout); chunk start states
  ``hc`` [Bsz, nc, H, P, N] with nc = ceil(T / chunk), ``hc[:, 0]`` = h0 (or zeros)

Math (transformers ``models/mamba2/modeling_mamba2.py``: ``mamba2_chunk_scan`` and
``mamba2_selective_state_update``, the torch paths):
    dt  = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)      softplus threshold 20
    A   = -exp(A_log)                                            one scalar per head
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T                   [P, N] per (b, h)
    y_t = h_t C_t + D x_t

Three implementations that must agree:
* :func:`ssd_sequential` - the plain recurrence, token by token;
* :func:`ssd_chunked`   - transformers' chunked algorithm (segment_sum, intra-chunk "attention",
  chunk states, inter-chunk recurrence, state -> output), transcribed einsum by einsum;
* :func:`ssd_step`      - one token (``mamba2_selective_state_update``).
"""
import numpy as np

SOFTPLUS_THRESHOLD = 20.0


def softplus(x):
    """softplus(x) = x if x > 20 else log1p(exp(x))   (torch: beta=1, threshold=20)."""
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))


def process_dt(dt, dt_bias=None, dt_min=0.0, dt_max=float("inf")):
    """dt_raw [..., H] -> clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)."""
    dt = np.asarray(dt, dtype=np.float64)
    if dt_bias is not None:
        dt = dt + np.asarray(dt_bias, dtype=np.float64)
    return np.clip(softplus(dt), dt_min, dt_max)


def _split(x, B, C, A_log, n_groups):
    """-> x [Bsz, T, H, P], B, C [Bsz, T, H, N] (groups repeated per head), A [H], sizes."""
    x = np.asarray(x, dtype=np.float64)
    A_log = np.asarray(A_log, dtype=np.float64)
    H = A_log.shape[0]
    nb, T, HP = x.shape
    if HP % H:
        raise ValueError(f"x width {HP} is not a multiple of H={H}")
    P = HP // H
    G = n_groups
    if H % G:
        raise ValueError(f"H={H} is not a multiple of n_groups={G}")
    N = np.asarray(B).shape[-1] // G
    rep = H // G

    def heads(m):   # [Bsz, T, G*N] -> [Bsz, T, H, N]: head h uses group h // rep
        m = np.asarray(m, dtype=np.float64).reshape(nb, T, G, N)
        return np.repeat(m, rep, axis=2)

    return x.reshape(nb, T, H, P), heads(B), heads(C), -np.exp(A_log), (nb, T, H, P, N)


def ssd_sequential(x, dt, A_log, B, C, n_groups, D=None, dt_bias=None, dt_min=0.0,
                   dt_max=float("inf"), h0=None, chunk=256):
    """The recurrence token by token -> (y [Bsz, T, H*P], h_final [Bsz, H, P, N],
    hc [Bsz, nc, H, P, N]: the state before token c*chunk of each chunk c)."""
    xs, Bh, Ch, A, (nb, T, H, P, N) = _split(x, B, C, A_log, n_groups)
    dts = process_dt(dt, dt_bias, dt_min, dt_max)                      # [Bsz, T, H]
    h = np.zeros((nb, H, P, N)) if h0 is None else np.array(h0, dtype=np.float64)
    Dv = np.zeros(H) if D is None else np.asarray(D, dtype=np.float64)
    nc = -(-T // chunk)
    hc = np.zeros((nb, nc, H, P, N))
    y = np.zeros((nb, T, H, P))
    for t in range(T):
        if t % chunk == 0:
            hc[:, t // chunk] = h
        d = dts[:, t]                                                  # [Bsz, H]
        h = np.exp(d * A)[:, :, None, None] * h + \
            (d[:, :, None] * xs[:, t])[..., None] * Bh[:, t][:, :, None, :]
        y[:, t] = np.einsum("bhpn,bhn->bhp", h, Ch[:, t]) + Dv[None, :, None] * xs[:, t]
    return y.reshape(nb, T, H * P), h, hc


def segment_sum(a):
    """transformers' stable segment sum: a [..., L] -> S [..., L, L] with
    S[l, s] = sum_{s < k <= l} a[k] for s <= l and -inf above the diagonal. The input is
    repeated and masked *before* the cumsum, so no difference of large cumsums is taken."""
    L = a.shape[-1]
    rep = np.broadcast_to(a[..., None], a.shape + (L,))                # [..., k, s] = a[k]
    strict = np.tril(np.ones((L, L), dtype=bool), -1)                  # k > s
    seg = np.cumsum(np.where(strict, rep, 0.0), axis=-2)               # sum over k <= l
    return np.where(np.tril(np.ones((L, L), dtype=bool)), seg, -np.inf)


def ssd_chunked(x, dt, A_log, B, C, n_groups, D=None, dt_bias=None, dt_min=0.0,
                dt_max=float("inf"), h0=None, chunk=256):
    """transformers' ``mamba2_chunk_scan`` in numpy (same steps, same order) -> as
    :func:`ssd_sequential`."""
    xs, Bh, Ch, A, (nb, T, H, P, N) = _split(x, B, C, A_log, n_groups)
    dts = process_dt(dt, dt_bias, dt_min, dt_max)
    L = chunk
    pad = (L - T % L) % L
    nc = (T + pad) // L

    def chunks(m):   # pad T with zeros, [Bsz, T, ...] -> [Bsz, nc, L, ...]
        m = np.concatenate([m, np.zeros((nb, pad) + m.shape[2:])], axis=1)
        return m.reshape((nb, nc, L) + m.shape[2:])

    xdt = xs * dts[..., None]                                          # x * dt
    Adt = A[None, None, :] * dts                                       # [Bsz, T, H]
    Xc, Ac, Bc, Cc = chunks(xdt), chunks(Adt), chunks(Bh), chunks(Ch)
    Ac = Ac.transpose(0, 3, 1, 2)                                      # [b, h, c, l]
    Acum = np.cumsum(Ac, axis=-1)
    # 1. intra-chunk (diagonal blocks)
    Lmat = np.exp(segment_sum(Ac))                                     # [b, h, c, l, s]
    G = np.einsum("bclhn,bcshn->bclsh", Cc, Bc)
    M = G * Lmat.transpose(0, 2, 3, 4, 1)
    Y_diag = np.einsum("bclsh,bcshp->bclhp", M, Xc)
    # 2. chunk states from zero
    decay_states = np.exp(Acum[..., -1:] - Acum)                       # [b, h, c, l]
    B_decay = Bc * decay_states.transpose(0, 2, 3, 1)[..., None]
    states = np.einsum("bclhn,bclhp->bchpn", B_decay, Xc)
    # 3. inter-chunk recurrence
    prev = np.zeros((nb, 1, H, P, N)) if h0 is None else np.asarray(h0, np.float64)[:, None]
    states = np.concatenate([prev, states], axis=1)                    # [b, nc+1, h, p, n]
    last = np.concatenate([np.zeros((nb, H, 1)), Acum[..., -1]], axis=-1)
    decay_chunk = np.exp(segment_sum(last)).transpose(0, 3, 2, 1)      # [b, z, c, h]
    new_states = np.einsum("bzch,bzhpn->bchpn", decay_chunk, states)
    hc, h_final = new_states[:, :-1], new_states[:, -1]
    # 4. state -> output
    C_states = np.einsum("bclhn,bchpn->bclhp", Cc, hc)
    Y_off = C_states * np.exp(Acum).transpose(0, 2, 3, 1)[..., None]
    y = (Y_diag + Y_off).reshape(nb, nc * L, H, P)[:, :T]
    if D is not None:
        y = y + np.asarray(D, np.float64)[None, None, :, None] * xs
    return y.reshape(nb, T, H * P), h_final, hc


def ssd_step(x, dt, A_log, B, C, state, n_groups, D=None, dt_bias=None, dt_min=0.0,
             dt_max=float("inf")):
    """One token: x [Bsz, H*P], dt [Bsz, H], B/C [Bsz, G*N], state [Bsz, H, P, N]
    -> (y [Bsz, H*P], new state)."""
    y, h, _ = ssd_sequential(np.asarray(x)[:, None], np.asarray(dt)[:, None], A_log,
                             np.asarray(B)[:, None], np.asarray(C)[:, None], n_groups, D=D,
                             dt_bias=dt_bias, dt_min=dt_min, dt_max=dt_max, h0=state, chunk=1)
    return y[:, 0], h
