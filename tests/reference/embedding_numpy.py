"""Float64 numpy reference of the embedding gather and its scatter-add backward
(shaders/embedding_forward.wgsl, embedding_backward.wgsl)."""

from __future__ import annotations

import numpy as np


def embedding(ids, E):
    """ids [...] int, E [V, d] -> [..., d] = E[ids]"""
    return E[np.asarray(ids)]


def embedding_backward(dy, ids, V):
    """dE [V, d]: dE[v] = sum over positions p with ids[p] == v of dy[p]  (scatter-add)."""
    ids = np.asarray(ids).reshape(-1)
    dE = np.zeros((V, dy.shape[-1]))
    np.add.at(dE, ids, dy.reshape(-1, dy.shape[-1]))
    return dE
