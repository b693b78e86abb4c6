"""Rotary position embedding (RoPE) on q or k as projected (shaders/rope.wgsl).

Llama's non-interleaved convention (transformers' rotate_half / apply_rotary_pos_emb), partial
as in Bamba / GLM / GPT-NeoX: per head only the first rot_dim channels rotate, pairing channel i
with i + rot_dim/2; the rest pass through.

Shapes (token rows r = b*T + t; heads head-major within a row):
    x, y   [Bsz*T, n_heads*head_dim]   (or [Bsz, T, ..]) Tensor or Cols view (x: a window of a
                                       fused projection; y: a new Tensor, or `out`, another buffer)
    pos    [Bsz] u32                   GPU-side positions (py_engine.ops.position), decode

Math: inv[i] = f32(1 / f32(theta ** f32(2i / rot_dim))), i < rot_dim/2 (transformers' default
rope formula with each operation correctly rounded; torch's vectorised CPU powf is up to 1 ulp
off that in a few entries for some (theta, rot_dim) -- none for theta 1e4 / 5e5 and rot_dim
<= 128 -- and then its own output differs from itself on other CPUs by as much);
position n = start + t (+ pos[b] when `pos` is given); a = f32(n) * inv[i] in f32;
y_i = x_i cos a - x_{i+R/2} sin a,  y_{i+R/2} = x_{i+R/2} cos a + x_i sin a.
inverse=True rotates by -a: the backward, dL/dx = R(a)^T dL/dy.
rot_dim = rotary_dim(head_dim, partial_rotary_factor): int(head_dim * factor) rounded down to even.

Dispatches: 1 (one thread per output element). inv_freq rides in the uniform (<= 128 floats),
so there is no extra buffer and a decode step's uniform is the same bytes every token.
"""
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params
from py_engine.ops.conv1d import Cols, view  # noqa: F401  (Cols re-exported)

MAX_ROT = 256          # the shader's inv table: 32 vec4 = 128 frequencies
INVERSE, USE_POS = 1, 2
SHADER = "rope"


def _f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def rotary_dim(head_dim, partial_rotary_factor=1.0):
    """transformers' int(head_dim * partial_rotary_factor), rounded down to even."""
    r = int(head_dim * partial_rotary_factor)
    return r - r % 2


def inv_freq(rot_dim, theta):
    """[rot_dim/2] f32 values (as Python floats): 1 / theta^(2i/rot_dim), every step rounded to
    f32 as torch's f32 formula does (1.0 / (base ** (arange(0, dim, 2).float() / dim)))."""
    R = int(rot_dim)
    return [_f32(1.0 / _f32(float(theta) ** _f32(_f32(float(2 * i)) / R))) for i in range(R // 2)]


def _rows(a, name, rows, width):
    shape = tuple(a.shape)
    n = 1
    for s in shape[:-1]:
        n *= s
    if shape[-1] != width or n != rows:
        raise ValueError(f"rope: {name} has shape {list(shape)}, expected {rows} rows of {width} "
                         f"([Bsz*T, {width}] or [Bsz, T, {width}])")


def rope_apply(batch, x, *, n_heads, head_dim, rot_dim, theta, Bsz, T, start=0, pos=None,
               inverse=False, out=None):
    """-> y [Bsz*T, n_heads*head_dim]: x with the first rot_dim channels of each head rotated by
    the angle of its row's position (start + t, plus pos[b] read on the GPU when `pos` is the
    [Bsz] u32 position buffer). inverse=True: rotate by -angle (the backward). 1 dispatch."""
    dev = batch.device
    H, Dh, R, Bsz, T, start = (int(n_heads), int(head_dim), int(rot_dim), int(Bsz), int(T),
                               int(start))
    if H < 1 or Dh < 1 or Bsz < 1 or T < 1:
        raise ValueError(f"rope: n_heads={H}, head_dim={Dh}, Bsz={Bsz}, T={T} must be positive")
    if R < 2 or R % 2 or R > Dh or R > MAX_ROT:
        raise ValueError(f"rope: rot_dim {R} must be even, 2 <= rot_dim <= head_dim ({Dh}) and "
                         f"<= {MAX_ROT}")
    if not float(theta) > 0.0:
        raise ValueError(f"rope: theta must be positive, got {theta!r}")
    if start < 0:
        raise ValueError(f"rope: start must be >= 0, got {start}")
    rows, width = Bsz * T, H * Dh
    _rows(x, "x", rows, width)
    if pos is not None and (tuple(pos.shape) != (Bsz,) or pos.dtype != "u32"):
        raise ValueError(f"rope: pos must be a [{Bsz}] u32 tensor, got {list(pos.shape)} "
                         f"{pos.dtype}")
    y = out if out is not None else Tensor(dev, (rows, width))
    _rows(y, "out", rows, width)
    xv, yv = view(x), view(y)
    if xv[0][0] is yv[0][0]:
        raise ValueError("rope: out must not share x's buffer (WebGPU refuses a buffer bound "
                         "both read-only and writable in one dispatch)")
    inv = inv_freq(R, theta)
    inv += [0.0] * (MAX_ROT // 2 - len(inv))
    flags = (INVERSE if inverse else 0) | (USE_POS if pos is not None else 0)
    un = dev.uniform(params(rows, width, Dh, R, T, start, flags, xv[1], xv[2], yv[1], yv[2], 0,
                            *inv))
    gx, gy = fold(-(-rows * width // 256))
    batch.run(SHADER, "rope_forward",
              [un, xv[0], pos.binding if pos is not None else dummy(dev), yv[0]], gx, gy)
    return y
