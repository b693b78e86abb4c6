"""float64/numpy reference of the narrow weight formats (shaders/lib/weight_formats.wgsl):
what quantize.wgsl must store and what a kernel must read back, value for value.

  roundtrip(w, fmt) -> float64 [N, K]: the weight as the engine sees it after quantizing.
  packed(w, fmt)    -> bytes: the buffer the engine stores (values then scales).
"""
import numpy as np


def bf16_round(w):
    """f32 -> bf16 by round-to-nearest-even on the bits, back as float64."""
    b = np.asarray(w, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint32)
    return (r << 16).astype(np.uint32).view(np.float32).astype(np.float64), r.astype(np.uint16)


def q8(w):
    """(int8 values [N, K], f32 scales [N]): scale = max|row| * f32(1/127), q = round-half-even(w/scale)."""
    w = np.asarray(w, np.float32)
    scale = (np.abs(w).max(axis=1) * np.float32(1.0 / 127.0)).astype(np.float32)
    inv = np.where(scale > 0, np.float32(1) / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    q = np.clip(np.round(w * inv[:, None]), -127, 127).astype(np.int8)
    return q, scale


def q4(w):
    """(nibbles 0..15 [N, K], f16 scales [N*K/32]): GGUF Q4_0, d = m / -8 (m: the group's value of
    largest magnitude, first one on ties), nibble = clip(round(w/d) + 8, 0, 15)."""
    w = np.asarray(w, np.float32)
    g = w.reshape(-1, 32)
    m = g[np.arange(len(g)), np.abs(g).argmax(axis=1)]
    d = (m / np.float32(-8)).astype(np.float16)
    d32 = d.astype(np.float32)
    inv = np.where(d32 != 0, np.float32(1) / np.where(d32 != 0, d32, 1), 0).astype(np.float32)
    n = np.clip(np.round(g * inv[:, None]) + 8, 0, 15).astype(np.uint8)
    return n.reshape(w.shape), d


def roundtrip(w, fmt):
    w = np.asarray(w, np.float32)
    if fmt == "f32":
        return w.astype(np.float64)
    if fmt == "f16":
        return w.astype(np.float16).astype(np.float64)
    if fmt == "bf16":
        return bf16_round(w)[0]
    if fmt == "q8":
        q, s = q8(w)
        return (q.astype(np.float32) * s[:, None]).astype(np.float64)   # one f32 product
    if fmt == "q4":
        n, d = q4(w)
        return ((n.astype(np.float32) - 8).reshape(-1, 32)
                * d.astype(np.float32)[:, None]).reshape(w.shape).astype(np.float64)
    raise ValueError(fmt)


def packed(w, fmt):
    w = np.asarray(w, np.float32)
    if fmt == "f16":
        data = w.astype(np.float16).tobytes()
    elif fmt == "bf16":
        data = bf16_round(w)[1].tobytes()
    elif fmt == "q8":
        q, s = q8(w)
        data = q.tobytes() + s.tobytes()
    elif fmt == "q4":
        n, d = q4(w)
        flat = n.reshape(-1, 2)
        data = (flat[:, 0] | (flat[:, 1] << 4)).astype(np.uint8).tobytes() + d.tobytes()
    else:
        raise ValueError(fmt)
    return data + bytes(-len(data) % 16)


def unpack(data, shape, fmt):
    """float64 values [N, K] of a packed buffer (what every kernel must read), computed as the
    kernels do (one f32 product of value and scale)."""
    N, K = shape
    n = N * K
    if fmt == "f16":
        return np.frombuffer(data, np.float16, n).astype(np.float64).reshape(N, K)
    if fmt == "bf16":
        bits = np.frombuffer(data, np.uint16, n).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64).reshape(N, K)
    if fmt == "q8":
        q = np.frombuffer(data, np.int8, n).astype(np.float32).reshape(N, K)
        s = np.frombuffer(data, np.float32, N, offset=n)
        return (q * s[:, None]).astype(np.float64)
    if fmt == "q4":
        b = np.frombuffer(data, np.uint8, n // 2)
        nib = np.stack([b & 15, b >> 4], axis=1).reshape(-1).astype(np.float32) - 8
        d = np.frombuffer(data, np.float16, n // 32, offset=n // 2).astype(np.float32)
        return (nib.reshape(-1, 32) * d[:, None]).reshape(N, K).astype(np.float64)
    raise ValueError(fmt)


def near_tie(w, fmt):
    """Where w / step lies within 1e-3 of a rounding boundary: a GPU's division (2.5 ulp in WGSL)
    may round those to either neighbour level."""
    w = np.asarray(w, np.float32).astype(np.float64)
    if fmt == "q8":
        step = (np.abs(w).max(axis=1) / 127)[:, None]
    elif fmt == "q4":
        _, d = q4(w)
        step = np.repeat(np.abs(d.astype(np.float64)), 32).reshape(w.shape)
    else:
        return np.zeros(w.shape, bool)
    frac = np.abs(np.where(step > 0, w / np.where(step > 0, step, 1), 0)) % 1.0
    return np.abs(frac - 0.5) < 1e-3
