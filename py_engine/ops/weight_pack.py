"""Weights a decode step multiplies by the same input, moved side by side into one GPU buffer so
that one mat-vec dispatch reads them all (weight_format.matvec_pieces).

The loader keeps each row block of a fused HF weight a tensor of its own (io/gpu_layout.py), and
a mat-vec dispatch binds at most three weights; Mamba-3's in_proj has eight blocks (z, x, B, C,
dd_dt, dd_A, trap, angles), three dispatches a decoded layer. Packed, each block stays the same
tensor object -- a whole matrix of its format (values, then its own scales for q8 / q4) at an
offset that is a multiple of the device's binding alignment, so prefill, training, adapters and
checkpoints still bind it alone -- and the eight sit in one buffer the pieces kernel binds once.

    owner = pack_rows(device, [w_z, w_x, ...])   # one copy each, at model build time
    ...
    owner.release()                               # with the model's weights (the blocks are views)
"""
from py_engine.gpu.tensor import Tensor


def is_packed(device, tensors):
    """Whether `tensors` already lie in one buffer in order, each at an aligned offset past the
    previous one's bytes (a second model built over the same weights packs nothing)."""
    buf = tensors[0].buffer
    end = None
    for t in tensors:
        if t.buffer is not buf or t.offset % device.align or (end is not None and t.offset < end):
            return False
        end = t.offset + t.nbytes
    return True


def pack_rows(device, tensors):
    """Copy `tensors` (2-D weights of one dtype, each in a buffer of its own) into one new buffer,
    each at the next multiple of the device's binding alignment, and make each tensor object a
    view of it; their old buffers are destroyed at once (not pooled: a model's weights are
    long-lived, and a pooled copy would hold their bytes twice on the GPU). Returns the owning
    tensor, which the caller releases when the weights go; None (nothing moved) where there is
    nothing to pack: fewer than two, mixed dtypes or shapes, row blocks or views, or already
    packed."""
    ts = list(tensors)
    if (len(ts) < 2 or any(not isinstance(t, Tensor) or len(t.shape) != 2 for t in ts)
            or len({(t.dtype, t.shape[1]) for t in ts}) != 1
            or is_packed(device, ts) or any(not t.pooled or t.buffer is None for t in ts)):
        return None
    align = device.align
    starts, off = [], 0
    for t in ts:
        starts.append(off)
        off += -(-t.nbytes // align) * align
    owner = Tensor(device, (off // 4,), "u32")
    batch = device.batch()
    for t, s in zip(ts, starts):
        batch.copy(t.buffer, t.offset, owner.buffer, owner.offset + s, t.nbytes)
    batch.submit()                   # the copies are queued before the old buffers go
    old = []
    for t, s in zip(ts, starts):
        old.append(t.buffer)
        t.pool.forget(t.buffer)
        t.buffer, t.offset, t.pooled, t.pool = owner.buffer, owner.offset + s, False, None
    device.destroy_many(old)         # WebGPU frees them once the queued copies have read them
    return owner
