"""Float64 numpy reference of the Mamba-1 selective scan: ZOH for A, Euler for B
(shaders/selective_scan_forward.wgsl, selective_scan_backward.wgsl).

transformers ``models/mamba/modeling_mamba.py`` (the torch "slow path"):
* ``mamba_selective_scan`` (recurrent loop; ``use_mambapy`` False and the associative scan only
  under torch.compile): ``dt = softplus(dt + delta_bias)``, ``dA = exp(A * dt)``,
  ``dBu = dt * B * u`` (Euler for B), ``h = dA * h + dBu``, ``y = h @ C``, ``y += u * D``,
  ``y *= silu(z)``; h starts at zero                                       -> :func:`selective_scan`
* ``mamba_selective_state_update``: the same for one token with a carried state
                                                                           -> :func:`selective_state_update`
* ``A = -torch.exp(self.A_log.float())`` in ``MambaMixer.forward``.
``ssm_state [I, N]`` is h after the last token (``cache.get_recurrent_state(layer)[b]``).
"""

from __future__ import annotations

import numpy as np

from tests.reference.elementwise_numpy import silu, silu_backward, softplus, softplus_backward


def selective_scan(u, delta, A_log, B, C, D, z=None, delta_bias=None, h0=None, return_states=False):
    """Sequence form (transformers mamba_selective_scan / state-spaces selective_scan_ref).

    u [..., T, I]      input (conv + silu output)
    delta [..., T, I]  dt_proj.weight @ dt_low, *without* bias
    A_log [I, N], B [..., T, N], C [..., T, N], D [I], z [..., T, I] or None, delta_bias [I] or None
    h0 [..., I, N] or None (zeros)
    -> y [..., T, I], h_T [..., I, N]   (+ all states [..., T, I, N] if return_states)

        A   = -exp(A_log)                              [I, N]
        dt  = softplus(delta + delta_bias)              [T, I]
        dA  = exp(dt[:, :, None] * A)                   [T, I, N]
        h_t = dA_t * h_{t-1} + dt_t[:, None] * B_t[None, :] * u_t[:, None]     [I, N]
        y_t = h_t @ C_t + D * u_t                       [I]
        y_t = y_t * silu(z_t)
    """
    A = -np.exp(A_log)
    dt = softplus(delta if delta_bias is None else delta + delta_bias)
    T = u.shape[-2]
    I, N = A.shape
    h = np.zeros(u.shape[:-2] + (I, N)) if h0 is None else np.array(h0, dtype=np.float64)
    ys = np.zeros(u.shape)
    hs = np.zeros(u.shape[:-2] + (T, I, N)) if return_states else None
    for t in range(T):
        dt_t = dt[..., t, :, None]  # [..., I, 1]
        h = np.exp(dt_t * A) * h + dt_t * B[..., t, None, :] * u[..., t, :, None]
        ys[..., t, :] = np.einsum("...in,...n->...i", h, C[..., t, :])
        if return_states:
            hs[..., t, :, :] = h
    y = ys + D * u
    if z is not None:
        y = y * silu(z)
    return (y, h, hs) if return_states else (y, h)


def selective_state_update(h, u_t, delta_t, A_log, B_t, C_t, D, z_t=None, delta_bias=None):
    """One token (transformers mamba_selective_state_update).

    h [..., I, N], u_t [..., I], delta_t [..., I] (no bias), B_t/C_t [..., N], z_t [..., I]
    -> (y_t [..., I], new h [..., I, N]);  same formulas as selective_scan for one t.
    """
    A = -np.exp(A_log)
    dt = softplus(delta_t if delta_bias is None else delta_t + delta_bias)[..., None]  # [..., I, 1]
    h = np.exp(dt * A) * h + dt * B_t[..., None, :] * u_t[..., :, None]
    y = np.einsum("...in,...n->...i", h, C_t) + D * u_t
    if z_t is not None:
        y = y * silu(z_t)
    return y, h


def selective_scan_backward(dy, u, delta, A_log, B, C, D, z=None, delta_bias=None, h0=None, dh_last=None):
    """Reverse mode of :func:`selective_scan`. dy [..., T, I]; dh_last [..., I, N] (grad flowing
    into the final state, e.g. from a later chunk) or None.

    Returns dict: du, ddelta (grad of the pre-bias delta), ddelta_bias [I], dA_log [I, N],
    dB, dC [..., T, N], dD [I], dz [..., T, I] (None if z is None), dh0 [..., I, N].

    With y0_t = h_t @ C_t + D u_t and y_t = y0_t * silu(z_t), going t = T-1 .. 0 with
    g = dL/dh_t (starts at dh_last):
        dy0_t  = dy_t * silu(z_t);      dz_t = dy_t * y0_t * silu'(z_t)
        dD    += dy0_t * u_t;           du_t = dy0_t * D
        g     += dy0_t[:, None] * C_t[None, :];         dC_t = sum_i dy0_t[i] h_t[i, :]
        ddt_t  = sum_n g * (dA_t * A * h_{t-1} + B_t * u_t)
        dA    += g * dA_t * dt_t * h_{t-1}
        dB_t   = sum_i g * dt_t * u_t;  du_t += sum_n g * dt_t * B_t
        g      = g * dA_t                                   (-> dL/dh_{t-1})
    then dA_log = dA * A (A = -exp(A_log)), ddelta = softplus'(delta + bias) * ddt, dh0 = g.
    """
    A = -np.exp(A_log)
    xb = delta if delta_bias is None else delta + delta_bias
    dt = softplus(xb)
    T = u.shape[-2]
    I, N = A.shape
    y_ssm, _, hs = selective_scan(u, delta, A_log, B, C, np.zeros_like(D), None, delta_bias, h0, return_states=True)
    y0 = y_ssm + D * u
    if z is not None:
        dy0 = dy * silu(z)
        dz = silu_backward(dy * y0, z)
    else:
        dy0 = dy
        dz = None
    batch = u.shape[:-2]
    hprev_all = np.concatenate(
        [(np.zeros(batch + (1, I, N)) if h0 is None else np.asarray(h0)[..., None, :, :]), hs[..., :-1, :, :]],
        axis=-3,
    )
    du = dy0 * D
    dD = (dy0 * u).reshape(-1, I).sum(0)
    dB = np.zeros(B.shape)
    dC = np.zeros(C.shape)
    ddt = np.zeros(u.shape)
    dA = np.zeros((I, N))
    g = np.zeros(batch + (I, N)) if dh_last is None else np.array(dh_last, dtype=np.float64)
    for t in range(T - 1, -1, -1):
        h_t = hs[..., t, :, :]
        hp = hprev_all[..., t, :, :]
        dt_t = dt[..., t, :, None]  # [..., I, 1]
        dA_t = np.exp(dt_t * A)  # [..., I, N]
        dC[..., t, :] = np.einsum("...i,...in->...n", dy0[..., t, :], h_t)
        g = g + dy0[..., t, :, None] * C[..., t, None, :]
        Bt = B[..., t, None, :]
        ut = u[..., t, :, None]
        ddt[..., t, :] = np.sum(g * (dA_t * A * hp + Bt * ut), axis=-1)
        dA += (g * dA_t * dt_t * hp).reshape(-1, I, N).sum(0)
        dB[..., t, :] = np.sum(g * dt_t * ut, axis=-2)
        du[..., t, :] += np.sum(g * dt_t * Bt, axis=-1)
        g = g * dA_t
    ddelta = softplus_backward(ddt, xb)
    return {
        "du": du,
        "ddelta": ddelta,
        "ddelta_bias": ddelta.reshape(-1, I).sum(0) if delta_bias is not None else None,
        "dA_log": dA * A,
        "dB": dB,
        "dC": dC,
        "dD": dD,
        "dz": dz,
        "dh0": g,
    }
