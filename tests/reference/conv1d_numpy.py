"""Float64 numpy reference of the depthwise causal conv1d of Mamba-1 / Falcon-Mamba
(shaders/conv1d_forward.wgsl, conv1d_backward.wgsl).

Sequences are time-major, channels last: ``x[..., T, I]``. ``conv1d.weight`` is stored
``[I, 1, K]``; these take it squeezed to ``[I, K]``.

transformers ``models/mamba/modeling_mamba.py`` (the torch "slow path"):
* ``causal_conv1d_fn``: ``F.conv1d(x, w[I,1,K], b, padding=K-1, groups=I)[..., :T]`` -> :func:`causal_conv1d`
* ``causal_conv1d_update``: ``cat([state, x])``, state <- last K, conv with padding 0, keep last
  output                                                                   -> :func:`causal_conv1d_step`
* ``cache_utils.py`` ``LinearAttentionLayer.update_conv_state`` (prefill: left-pads to K if T < K,
  keeps the last K columns)                                                -> :func:`conv_state_from_inputs`

``conv_state [I, K]``: the last K *pre-conv* inputs, oldest in column 0, newest in column K-1;
zero-filled on the left when fewer than K tokens were seen (see mamba1_model_numpy.py).
"""

from __future__ import annotations

import numpy as np


def _conv_pad(x, K, left=None):
    """xp [..., K-1+T, I]: `left` [..., K-1, I] (previous inputs) or zeros, then x."""
    if left is None:
        left = np.zeros(x.shape[:-2] + (K - 1, x.shape[-1]))
    return np.concatenate([left, x], axis=-2)


def causal_conv1d(x, w, b=None, left=None):
    """x [..., T, I], w [I, K] (torch [I,1,K] squeezed), b [I] or None, left [..., K-1, I] or None
    -> y [..., T, I]   (no activation)

    torch: F.conv1d(x^T, w[I,1,K], b, padding=K-1, groups=I)[..., :T]  (cross-correlation):
        y[t, i] = b[i] + sum_{k=0}^{K-1} w[i, k] * xp[t + k, i],   xp[s] = x[s - (K-1)], 0 before 0
    i.e. w[i, K-1] multiplies the current input and w[i, 0] the one K-1 steps back.
    """
    K = w.shape[-1]
    T = x.shape[-2]
    xp = _conv_pad(x, K, left)
    y = np.zeros(x.shape)
    for k in range(K):
        y += w[:, k] * xp[..., k : k + T, :]
    return y if b is None else y + b


def causal_conv1d_backward(dy, x, w, has_bias=True, left=None):
    """-> (dx [..., T, I], dw [I, K], db [I] or None, dleft [..., K-1, I])

    dxp[t + k, i] += dy[t, i] w[i, k];  dw[i, k] = sum_t dy[t, i] xp[t + k, i];  db = sum_t dy
    """
    K = w.shape[-1]
    T = x.shape[-2]
    xp = _conv_pad(x, K, left)
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for k in range(K):
        dxp[..., k : k + T, :] += dy * w[:, k]
        dw[:, k] = (dy * xp[..., k : k + T, :]).reshape(-1, w.shape[0]).sum(0)
    db = dy.reshape(-1, w.shape[0]).sum(0) if has_bias else None
    return dxp[..., K - 1 :, :], dw, db, dxp[..., : K - 1, :]


def causal_conv1d_step(x_t, conv_state, w, b=None):
    """x_t [..., I], conv_state [..., I, K] (last K inputs, newest last), w [I, K]
    -> (y_t [..., I], new conv_state [..., I, K])      (transformers causal_conv1d_update)

    state <- roll(state, -1); state[:, K-1] = x_t;  y_t[i] = b[i] + sum_k state[i, k] * w[i, k]
    """
    s = np.concatenate([conv_state[..., 1:], x_t[..., None]], axis=-1)
    y = np.sum(s * w, axis=-1)
    return (y if b is None else y + b), s


def conv_state_from_inputs(x, K, prev_state=None):
    """conv_state [..., I, K] after feeding x [..., T, I]: the last K inputs (zero-padded left),
    continuing prev_state [..., I, K] if given (transformers update_conv_state)."""
    if prev_state is None:
        prev = np.zeros(x.shape[:-2] + (K, x.shape[-1]))
    else:
        prev = np.swapaxes(prev_state, -1, -2)
    full = np.concatenate([prev, x], axis=-2)
    return np.swapaxes(full[..., -K:, :], -1, -2).copy()
