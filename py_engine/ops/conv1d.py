"""Depthwise causal conv1d of Mamba-1 / Falcon-Mamba (shaders/conv1d_{forward,backward}.wgsl).

Shapes (Bsz may be absent: [T, I] means Bsz = 1):
    x     [Bsz, T, I]   pre-conv input (the x half of in_proj), token-major
    w     [I, K]        PyTorch's conv1d weight [I, 1, K] squeezed (K <= 8; Mamba uses 4)
    bias  [I]
    y     [Bsz, T, I]   conv output, optionally through SiLU (silu=True)
    state [Bsz, I, K]   the last K inputs, oldest in column 0, newest in column K-1, zero on the
                        left when fewer than K were seen (transformers' conv cache layout)

Math:
    pre[t, i] = bias[i] + sum_k w[i, k] * x[t - (K-1) + k, i]      (x before 0: state or 0)
    step:     state <- [state[:, 1:], x_t];  y_t = sum_k state[:, k] * w[:, k] + bias
    backward: g = dy (* silu'(pre) when silu);  dx[t] = sum_k g[t + K-1-k] w[:, k]
              dw[i, k] = sum_{b,t} g[t, i] x[t - (K-1) + k, i];  db = sum_{b,t} g

Any activation operand (x, y, dy, dx) may be a `Cols` view: a column window of a row-major
matrix, so x is read straight out of in_proj's [x | z] output without a copy.

Dispatches: forward 1 (also writes the final state), step 1 (conv + SiLU fused, state in place),
backward 3 (dx, per-chunk dw/db partials, fixed-order reduce: deterministic, no atomics).
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params

SILU, HAS_BIAS, HAS_STATE, WRITE_STATE, ACCUMULATE = 1, 2, 4, 8, 16
MAXK = 8
ROWS_PER_CHUNK = 64   # rows of (b, t) per dw/db partial


class Cols:
    """Columns [start, start + width) of `tensor` (row-major, rows of tensor.shape[-1] values).

    `shape` is the view's logical shape (default: tensor.shape[:-1] + (width,)); use it to give a
    flat [Bsz*T, 2I] matrix the [Bsz, T, I] shape an op expects.
    """
    __slots__ = ("tensor", "start", "width", "shape")

    def __init__(self, tensor, start, width, shape=None):
        if start + width > tensor.shape[-1]:
            raise ValueError(f"columns {start}..{start + width} exceed the {tensor.shape[-1]} "
                             "columns of the tensor")
        self.tensor, self.start, self.width = tensor, int(start), int(width)
        self.shape = tuple(shape) if shape is not None else tuple(tensor.shape[:-1]) + (int(width),)
        if self.shape[-1] != self.width:
            raise ValueError(f"view shape {list(self.shape)} does not end in its width {width}")

    @property
    def device(self):
        return self.tensor.device

    @property
    def binding(self):
        return self.tensor.binding

    @property
    def buffer(self):
        return self.tensor.buffer


def rw_dummy(device, slot=0):
    """A small scratch buffer for a read_write binding a kernel declares but this call does not
    use. The shared read-only `dummy` cannot also be bound writable in the same dispatch, and
    each unused writable binding of one dispatch gets its own `slot` so none alias."""
    bufs = device.__dict__.setdefault("_dummy_rw", {})
    if slot not in bufs:
        bufs[slot] = device.buffer(256, label=f"dummy_rw{slot}")
    return bufs[slot]


def view(a):
    """(binding, element offset, row stride) of a Tensor or Cols, for a kernel's view fields."""
    if isinstance(a, Cols):
        return a.tensor.binding, a.start, a.tensor.shape[-1]
    return a.binding, 0, a.shape[-1]


def bt_of(a, last):
    """(Bsz, T) of an activation of shape [T, last] or [Bsz, T, last]."""
    shape = tuple(a.shape)
    if shape[-1] != last:
        raise ValueError(f"expected last dim {last}, got shape {list(shape)}")
    if len(shape) == 2:
        return 1, shape[0]
    if len(shape) == 3:
        return shape[0], shape[1]
    raise ValueError(f"expected [T, {last}] or [Bsz, T, {last}], got {list(shape)}")


def _out(dev, a, shape):
    if a is None:
        return Tensor(dev, shape)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"output has shape {list(a.shape)}, expected {list(shape)}")
    return a


def _uniform(dev, T, I, K, flags, nb, rows_out=0, rc=0, nchunks=0, xv=(None, 0, 0),
             ov=(None, 0, 0), gv=(None, 0, 0)):
    return dev.uniform(params(T, I, K, flags, nb, rows_out, rc, nchunks,
                              xv[1], xv[2], ov[1], ov[2], gv[1], gv[2], 0, 0))


def _check_w(w, b, I):
    if len(w.shape) != 2 or w.shape[0] != I or not 1 <= w.shape[1] <= MAXK:
        raise ValueError(f"conv weight must be [I={I}, K<= {MAXK}], got {list(w.shape)}")
    if b is not None and tuple(b.shape) != (I,):
        raise ValueError(f"conv bias must be [{I}], got {list(b.shape)}")
    return w.shape[1]


def _four_ok(dev):
    """conv1d_forward4 for K = 4: `device.conv4` (tests), else MAMBAWEB_CONV4 = 1 | 0 (bench
    variants: the tap-by-tap kernel side by side), else on."""
    from py_engine.gpu.settings import choose
    return choose(dev, "conv4", "MAMBAWEB_CONV4", "1", "0", lambda: True)


def conv1d_forward(batch, x, w, b=None, silu=False, state_in=None, state_out=None,
                   write_state=False, out=None):
    """x [Bsz, T, I] (or [T, I], or a Cols view), w [I, K], b [I] -> (y [Bsz, T, I], state_out)

    state_in [Bsz, I, K]: inputs before t = 0 (continuing a sequence); None = zeros.
    write_state / state_out: also write the conv state after the last token (the last K inputs,
    zero-padded on the left when T + history < K) so decode can continue. state_out must not
    share a buffer with state_in. 1 dispatch.
    """
    dev = batch.device
    I = x.shape[-1]
    nb, T = bt_of(x, I)
    K = _check_w(w, b, I)
    y = _out(dev, out, tuple(x.shape))
    write_state = write_state or state_out is not None
    if write_state:
        state_out = _out(dev, state_out, (nb, I, K))
        if state_in is not None and state_in.buffer is state_out.buffer:
            raise ValueError("conv1d_forward: state_out must not share a buffer with state_in")
    flags = ((SILU if silu else 0) | (HAS_BIAS if b is not None else 0) |
             (HAS_STATE if state_in is not None else 0) | (WRITE_STATE if write_state else 0))
    rows_out = max(T, K) if write_state else T
    xv, yv = view(x), view(y)
    u = _uniform(dev, T, I, K, flags, nb, rows_out, xv=xv, ov=yv)
    # K = 4 (every Mamba): four tokens a thread, their seven inputs loaded together
    # (conv1d_forward4 says why); other widths one token a thread, tap by tap
    four = K == 4 and _four_ok(dev)
    gy, gz = fold(nb * (-(-rows_out // 4) if four else rows_out))
    batch.run("conv1d_forward", "conv1d_forward4" if four else "conv1d_forward",
              [u, xv[0], w.binding, b.binding if b is not None else dummy(dev), yv[0],
               state_in.binding if state_in is not None else dummy(dev),
               state_out.binding if write_state else rw_dummy(dev)],
              -(-I // 64), gy, gz)
    return y, state_out


def conv1d_step(batch, x_t, state, w, b=None, silu=True, out=None):
    """One token: x_t [Bsz, I] or [I] (or Cols), state [Bsz, I, K] updated in place -> y_t.

    state <- [state[:, :, 1:], x_t];  y_t = sum_k state * w + b, then SiLU (fused, default on,
    as the Mamba mixer applies it right after the conv). 1 dispatch.
    """
    dev = batch.device
    I = x_t.shape[-1]
    nb = 1 if len(x_t.shape) == 1 else x_t.shape[0]
    K = _check_w(w, b, I)
    if tuple(state.shape) != (nb, I, K) and not (nb == 1 and tuple(state.shape) == (I, K)):
        raise ValueError(f"conv state must be [{nb}, {I}, {K}], got {list(state.shape)}")
    y = _out(dev, out, tuple(x_t.shape))
    xv, yv = view(x_t), view(y)
    flags = (SILU if silu else 0) | (HAS_BIAS if b is not None else 0)
    u = _uniform(dev, 1, I, K, flags, nb, xv=xv, ov=yv)
    batch.run("conv1d_forward", "conv1d_step",
              [u, xv[0], w.binding, b.binding if b is not None else dummy(dev), yv[0], None,
               state.binding], -(-I // 64), nb)
    return y


def conv1d_backward(batch, dy, x, w, b=None, silu=False, state_in=None, dx=None, dw=None,
                    db=None, accumulate=False):
    """dy [Bsz, T, I] (grad of y; of silu(pre) when silu=True), x, w, b as in forward
    -> (dx [Bsz, T, I], dw [I, K], db [I] or None).

    accumulate: add into the given dx/dw/db instead of overwriting. The gradient into
    state_in (a sequence continued from a cache) is not produced. 3 dispatches.
    """
    dev = batch.device
    I = x.shape[-1]
    nb, T = bt_of(x, I)
    K = _check_w(w, b, I)
    if bt_of(dy, I) != (nb, T):
        raise ValueError(f"dy shape {list(dy.shape)} does not match x {list(x.shape)}")
    dx = _out(dev, dx, tuple(x.shape))
    dw = _out(dev, dw, (I, K))
    if b is not None:
        db = _out(dev, db, (I,))
    flags = ((SILU if silu else 0) | (HAS_BIAS if b is not None else 0) |
             (HAS_STATE if state_in is not None else 0) | (ACCUMULATE if accumulate else 0))
    rows = nb * T
    nchunks = -(-rows // ROWS_PER_CHUNK)
    xv, dxv, gv = view(x), view(dx), view(dy)
    u = _uniform(dev, T, I, K, flags, nb, T, ROWS_PER_CHUNK, nchunks, xv, dxv, gv)
    sin = state_in.binding if state_in is not None else dummy(dev)
    bb = b.binding if b is not None else dummy(dev)
    gy, gz = fold(rows)
    batch.run("conv1d_backward", "conv1d_backward",
              [u, xv[0], w.binding, bb, dxv[0], sin, None, gv[0]], -(-I // 64), gy, gz)
    part = Tensor(dev, (nchunks, I, K + 1))
    batch.run("conv1d_backward", "conv1d_backward_weight",
              [u, xv[0], w.binding, bb, None, sin, None, gv[0], part.binding], -(-I // 64), nchunks)
    batch.run("conv1d_backward", "conv1d_backward_reduce",
              [u, None, None, None, None, None, None, None, part.binding, dw.binding,
               db.binding if b is not None else dummy(dev)], -(-I // 64))
    part.release()  # the pool hands it out again only to later-recorded work
    return dx, dw, db
