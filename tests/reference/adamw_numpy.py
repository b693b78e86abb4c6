"""Float64 numpy reference of AdamW (shaders/adamw.wgsl): torch.optim.AdamW semantics,
decoupled weight decay. Parameters and gradients are dicts keyed by the HuggingFace names."""

from __future__ import annotations

import math

import numpy as np

DECAY_SUFFIXES = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight",
                  "out_proj.weight")


def decays(name):
    """Weight decay only on the 2-D weight matrices (embedding, head, in/x/dt/out proj); not on
    conv1d.weight, biases, norms, A_log (2-D but excluded), D."""
    return name.endswith(DECAY_SUFFIXES)


def adamw_step(params, grads, m, v, step_no, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """In-place torch.optim.AdamW step (step_no counts from 1), for every name in grads:
        p *= 1 - lr * wd            (only where decays(name))
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    b1, b2 = betas
    tied = params.get("lm_head.weight") is params.get("backbone.embeddings.weight") and "lm_head.weight" not in grads
    for k, gk in grads.items():
        if k not in m:
            m[k] = np.zeros_like(gk)
            v[k] = np.zeros_like(gk)
        p = params[k]
        if decays(k) and weight_decay:
            p = p * (1.0 - lr * weight_decay)
        m[k] = b1 * m[k] + (1 - b1) * gk
        v[k] = b2 * v[k] + (1 - b2) * gk * gk
        bc1 = 1 - b1**step_no
        bc2 = 1 - b2**step_no
        denom = np.sqrt(v[k]) / math.sqrt(bc2) + eps
        params[k] = p - (lr / bc1) * m[k] / denom
    if tied:
        params["lm_head.weight"] = params["backbone.embeddings.weight"]
    return params
