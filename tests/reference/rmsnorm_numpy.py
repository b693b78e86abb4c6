"""Float64 numpy reference of RMSNorm (shaders/rmsnorm_forward.wgsl, rmsnorm_backward.wgsl).

* transformers ``models/mamba/modeling_mamba.py`` ``MambaRMSNorm.forward``:
  ``w * (x * rsqrt(mean(x^2) + eps))``, eps = ``layer_norm_epsilon`` (block norm and ``norm_f``).
* ``models/falcon_mamba/modeling_falcon_mamba.py`` ``FalconMambaWeightlessRMSNorm``: the same
  without a weight (``w=None`` here), over the last dim.
"""

from __future__ import annotations

import numpy as np


def rmsnorm(x, w=None, eps=1e-5):
    """x [..., D], w [D] or None (weightless, Falcon's B/C/dt norms) -> [..., D]

    r = 1 / sqrt(mean_j x_j^2 + eps);  y = x * r * w
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    y = x * r
    return y if w is None else y * w


def rmsnorm_backward(dy, x, w=None, eps=1e-5):
    """-> (dx [..., D], dw [D] or None)

    xhat = x r;  g = dy * w;  dw = sum_{...} dy * xhat
    dx = r * (g - xhat * mean_j(g_j xhat_j))      (since d r / d x_i = -r^3 x_i / D)
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * r
    g = dy if w is None else dy * w
    dx = r * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    dw = None if w is None else (dy * xhat).reshape(-1, x.shape[-1]).sum(0)
    return dx, dw
