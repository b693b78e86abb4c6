"""Float64 numpy reference of rotary position embedding (shaders/rope.wgsl, py_engine/ops/rope.py).

Checked against transformers' apply_rotary_pos_emb (Llama: full; Bamba: partial) and rotary
embedding classes in tests/browser/test_kernels_rope.py (host tests).

Shapes: ``x`` [Bsz, T, H*Dh] (head h = columns h*Dh .. h*Dh+Dh-1); ``positions`` [Bsz, T] ints.
Math (Llama's non-interleaved rotate_half convention; only the first R = rot_dim channels of each
head rotate, the rest pass through):
    inv[i] = theta^(-2i/R) as torch's f32 formula computes it (every step rounded to f32)
    a[b, t, i] = f32(positions[b, t] * inv[i])          -- the f32 angle torch uses
    y_i = x_i cos a - x_{i+R/2} sin a,   y_{i+R/2} = x_{i+R/2} cos a + x_i sin a   (float64)
inverse=True uses -a (R^T: the backward). The angles are f32 on purpose: that is what every f32
model computes, so the reference owes the kernel no disagreement there; everything after is float64.
"""
import numpy as np


def rotary_dim(head_dim, factor=1.0):
    r = int(head_dim * factor)
    return r - r % 2


def inv_freq(rot_dim, theta):
    """[R/2] float32, as torch: 1.0 / (theta ** (arange(0, R, 2).float() / R)), each op rounded."""
    e = (np.arange(0, rot_dim, 2, dtype=np.float64).astype(np.float32) / np.float32(rot_dim))
    p = np.array([np.float32(float(theta) ** float(v)) for v in e.astype(np.float64)],
                 dtype=np.float32)      # correctly rounded f32 pow
    return (np.float32(1.0) / p).astype(np.float32)


def angles(positions, rot_dim, theta):
    """[..., R/2] float32 angles f32(position * inv) of integer positions [...]."""
    pos = np.asarray(positions, dtype=np.float32)
    return (pos[..., None] * inv_freq(rot_dim, theta)[None, :]).astype(np.float32)


def rope(x, H, Dh, rot_dim, theta, positions, inverse=False):
    """x [Bsz, T, H*Dh] -> y (float64), positions [Bsz, T]."""
    x = np.asarray(x, dtype=np.float64)
    Bsz, T, _ = x.shape
    R, half = int(rot_dim), int(rot_dim) // 2
    a = angles(np.broadcast_to(positions, (Bsz, T)), R, theta).astype(np.float64)
    c, s = np.cos(a)[:, :, None, :], np.sin(a)[:, :, None, :]    # [Bsz, T, 1, R/2]
    if inverse:
        s = -s
    xh = x.reshape(Bsz, T, H, Dh)
    y = xh.copy()
    x1, x2 = xh[..., :half], xh[..., half:R]
    y[..., :half] = x1 * c - x2 * s
    y[..., half:R] = x2 * c + x1 * s
    return y.reshape(Bsz, T, H * Dh)


def rope_backward(dy, H, Dh, rot_dim, theta, positions):
    """dL/dx = R^T dL/dy: the rotation by -angle."""
    return rope(dy, H, Dh, rot_dim, theta, positions, inverse=True)
