"""Float64 numpy reference of the elementwise activations (shaders/elementwise_forward.wgsl,
elementwise_backward.wgsl; also fused into the conv1d and selective-scan kernels).

* ``torch.nn.functional.softplus`` (beta 1, threshold 20): ``x > 20 ? x : log1p(exp(x))``;
  backward ``x > 20 ? g : g * sigmoid(x)``.
* SiLU (``hidden_act`` "silu" in transformers' Mamba mixers): ``x * sigmoid(x)``.
"""

from __future__ import annotations

import numpy as np

SOFTPLUS_THRESHOLD = 20.0


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), written to not overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x):
    """softplus(x) = x if x > 20 else log1p(exp(x))   (torch: beta=1, threshold=20)."""
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))


def softplus_backward(dy, x):
    """d softplus / dx = 1 if x > 20 else sigmoid(x)."""
    return dy * np.where(x > SOFTPLUS_THRESHOLD, 1.0, sigmoid(x))


def silu(x):
    """silu(x) = x * sigmoid(x)."""
    return x * sigmoid(x)


def silu_backward(dy, x):
    """d silu / dx = s + x s (1 - s) = s (1 + x (1 - s)),  s = sigmoid(x)."""
    s = sigmoid(x)
    return dy * s * (1.0 + x * (1.0 - s))
