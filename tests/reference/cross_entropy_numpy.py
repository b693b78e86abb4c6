"""Float64 numpy reference of the mean softmax cross-entropy with an ignore index
(shaders/cross_entropy_forward.wgsl, cross_entropy_backward.wgsl).

transformers ``loss/loss_utils.py`` ``ForCausalLMLoss``: labels padded right with -100 and
shifted by one, ``cross_entropy(ignore_index=-100, reduction="mean")`` = mean over non-ignored
targets.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100


def log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX):
    """logits [..., V], targets [...] int -> (mean loss, dlogits [..., V])

    loss = (1/n) sum_{p: targets[p] != ignore} (logsumexp(logits[p]) - logits[p, targets[p]])
    dlogits[p] = (softmax(logits[p]) - onehot(targets[p])) / n for valid p, 0 for ignored.
    n = number of valid targets (torch cross_entropy reduction="mean"; 0/0 = nan if none).
    """
    V = logits.shape[-1]
    lg = logits.reshape(-1, V)
    tg = np.asarray(targets).reshape(-1)
    valid = tg != ignore_index
    n = int(valid.sum())
    lsm = log_softmax(lg)
    safe = np.where(valid, tg, 0)
    nll = -lsm[np.arange(len(tg)), safe]
    loss = float(np.sum(np.where(valid, nll, 0.0)) / n) if n else float("nan")
    d = np.exp(lsm)
    d[np.arange(len(tg)), safe] -= 1.0
    d = np.where(valid[:, None], d, 0.0) / max(n, 1)
    return loss, d.reshape(logits.shape)


def causal_lm_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """HF ForCausalLMLoss: position t predicts labels[t+1]; the last position has no target.
    logits [..., T, V], labels [..., T] -> (loss, dlogits [..., T, V])."""
    labels = np.asarray(labels)
    pad = np.full(labels.shape[:-1] + (1,), ignore_index, dtype=labels.dtype)
    shifted = np.concatenate([labels[..., 1:], pad], axis=-1)
    return cross_entropy(logits, shifted, ignore_index)
