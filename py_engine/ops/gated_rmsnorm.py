"""Gated, grouped RMSNorm of Mamba-2 (shaders/gated_rmsnorm_{forward,backward}.wgsl).

transformers' MambaRMSNormGated with norm_before_gate=False. Over M rows of I channels in G
groups of S = group_size = I/G consecutive channels:
    v = y * silu(z);   rstd[m, g] = 1 / sqrt(mean_{c in g} v_c^2 + eps);   out_c = v_c * rstd * w_c

Shapes:
    y    [M, I]  (or [Bsz, T, I]: M is every dim but the last) the scan output
    z    [M, I]  the gate, usually a `Cols` view: the z window of in_proj's output
    w    [I]     out [M, I]     rstd [M, G] (saved by forward for backward)
Every [M, I] operand and result (y, z, out, dout, dy, dz) may be a `Cols` view, so dz is
written in place into the z window of in_proj's gradient.

Dispatches: forward 1; backward 3 (dy/dz; per-chunk dw partials; fixed-order reduce), 2 when
M <= ROWS_PER_CHUNK (the partial pass writes dw itself). Deterministic: no atomics.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import fold, out_like, params, rows_of
from py_engine.ops.conv1d import rw_dummy, view

ACCUMULATE = 1
NORM_BEFORE_GATE = 2  # the backward's flag for the forward's norm_before_gate
ROWS_PER_CHUNK = 64   # rows per dw partial
MAX_CHUNKS = 65535    # one workgroup row per chunk in the partial pass


def _check(y, z, w, group_size):
    I = y.shape[-1]
    if tuple(z.shape) != tuple(y.shape):
        raise ValueError(f"gate z has shape {list(z.shape)}, y has {list(y.shape)}")
    if tuple(w.shape) != (I,):
        raise ValueError(f"norm weight must be [{I}], got {list(w.shape)}")
    group_size = int(group_size)
    if group_size <= 0 or I % group_size:
        raise ValueError(f"group_size {group_size} does not divide the {I} channels")
    return rows_of(y), I, group_size, I // group_size


def gated_rmsnorm_forward(batch, y, z, w, *, group_size, eps, out=None,
                          norm_before_gate=False):
    """y [M, I] (Tensor or Cols), z [M, I] (Tensor or Cols), w [I] -> (out [M, I], rstd [M, G]).

    out: optional destination (Tensor or Cols of y's shape). 1 dispatch.
    norm_before_gate (Mamba-3's is_outproj_norm): out = RMSNorm_group(y) * w * silu(z); pass the
    same flag to the backward.
    """
    dev = batch.device
    M, I, S, G = _check(y, z, w, group_size)
    out = out_like(dev, tuple(y.shape), out)
    rstd = Tensor(dev, (M, G))
    yv, zv, ov = view(y), view(z), view(out)
    u = dev.uniform(params(M, I, S, G, float(eps), 1 if norm_before_gate else 0, 0, 0,
                           yv[1], yv[2], zv[1], zv[2], ov[1], ov[2], 0, 0))
    gy, gz = fold(M)
    batch.run("gated_rmsnorm_forward", "gated_rmsnorm_forward",
              [u, yv[0], zv[0], w.binding, ov[0], rstd.binding], G, gy, gz)
    return out, rstd


def gated_rmsnorm_backward(batch, dout, y, z, w, rstd, *, group_size, eps, dw=None,
                           accumulate_dw=False, dy=None, dz=None, norm_before_gate=False):
    """dout [M, I], y, z, w as in forward, rstd [M, G] from forward -> (dy [M, I], dz [M, I], dw [I]).
    norm_before_gate: as given to the forward.

    dy / dz: optional destinations (Tensor or Cols; dz is typically the z window of in_proj's
    gradient), overwritten. dw: optional [I]; accumulate_dw adds into it instead of overwriting.
    3 dispatches (2 when M <= ROWS_PER_CHUNK).
    """
    dev = batch.device
    M, I, S, G = _check(y, z, w, group_size)
    if tuple(dout.shape) != tuple(y.shape):
        raise ValueError(f"dout has shape {list(dout.shape)}, y has {list(y.shape)}")
    if tuple(rstd.shape) != (M, G):
        raise ValueError(f"rstd must be [{M}, {G}], got {list(rstd.shape)}")
    if accumulate_dw and dw is None:
        raise ValueError("accumulate_dw needs the dw to add into")
    dy = out_like(dev, tuple(y.shape), dy)
    dz = out_like(dev, tuple(y.shape), dz)
    dw = out_like(dev, (I,), dw)
    if dy.buffer is dz.buffer:
        raise ValueError("dy and dz must not share a buffer (two writable bindings of one "
                         "buffer in one dispatch are a WebGPU validation error)")
    nchunks = -(-M // ROWS_PER_CHUNK)
    if nchunks > MAX_CHUNKS:
        raise ValueError(f"{M} rows exceed the {MAX_CHUNKS * ROWS_PER_CHUNK} this kernel handles")
    yv, zv, dyv, gv, dzv = view(y), view(z), view(dy), view(dout), view(dz)
    flags = (ACCUMULATE if accumulate_dw else 0) | (NORM_BEFORE_GATE if norm_before_gate else 0)
    u = dev.uniform(params(M, I, S, G, float(eps), flags,
                           ROWS_PER_CHUNK, nchunks, yv[1], yv[2], zv[1], zv[2],
                           dyv[1], dyv[2], gv[1], gv[2], dzv[1], dzv[2], 0, 0))
    gy, gz = fold(M)
    batch.run("gated_rmsnorm_backward", "gated_rmsnorm_backward",
              [u, yv[0], zv[0], w.binding, dyv[0], rstd.binding, gv[0], dzv[0]], G, gy, gz)
    part = Tensor(dev, (nchunks, I)) if nchunks > 1 else None
    batch.run("gated_rmsnorm_backward", "gated_rmsnorm_backward_weight",
              [u, yv[0], zv[0], None, None, rstd.binding, gv[0], None,
               part.binding if part is not None else rw_dummy(dev), dw.binding],
              -(-I // 64), nchunks)
    if part is not None:
        batch.run("gated_rmsnorm_backward", "gated_rmsnorm_backward_reduce",
                  [u, None, None, None, None, None, None, None, part.binding, dw.binding],
                  -(-I // 64))
        part.release()  # the pool hands it out again only to later-recorded work
    return dy, dz, dw
