"""Weights a decode step multiplies by the same input, moved side by side into one GPU buffer so
that one mat-vec dispatch reads them all (weight_format.matvec_pieces).

The loader keeps each row block of a fused HF weight a tensor of its own (io/gpu_layout.py), and
a mat-vec dispatch binds at most three weights; Mamba-3's in_proj has eight blocks (z, x, B, C,
dd_dt, dd_A, trap, angles), three dispatches a decoded layer. Packed, each block stays the same
tensor object -- a whole matrix of its format (values, then its own scales for q8 / q4) at an
offset that is a multiple of the device's binding alignment, so prefill, training, adapters and
checkpoints still bind it alone -- and the blocks sit in one buffer the pieces kernel binds once.
The first block owns that buffer (releasing it releases them all, as a model's weights are
released together); the others are views.

A layer kind names its groups with `decode_packs(cfg)` (relative piece names, in row order);
py_engine/models/packing.pack_model packs every layer's.
"""
from py_engine.gpu.tensor import Tensor, aligned_offsets


def is_packed(device, tensors):
    """Whether `tensors` already lie in one buffer in order, each at an aligned offset past the
    previous one's bytes."""
    buf = tensors[0].buffer
    end = None
    for t in tensors:
        if t.buffer is not buf or t.offset % device.align or (end is not None and t.offset < end):
            return False
        end = t.offset + t.nbytes
    return True


def pack_rows(device, tensors):
    """Copy `tensors` (2-D weights of one dtype and K, each in a pooled buffer of its own) into
    one new pooled buffer, each at the next multiple of the device's binding alignment; the
    first tensor object then owns that buffer and the others are views of it. Their old
    buffers are destroyed (not pooled: a model's weights are long-lived, and pooled copies would
    hold their bytes twice on the GPU) -- small ones (KEEP_BYTES) go back to the pool instead.
    Returns whether anything moved: nothing does for fewer than two tensors, mixed dtypes or K,
    row blocks or views, or blocks already packed."""
    ts = list(tensors)
    if (len(ts) < 2 or any(not isinstance(t, Tensor) or len(t.shape) != 2 for t in ts)
            or len({(t.dtype, t.shape[1]) for t in ts}) != 1):
        return False
    return _pack(device, ts)


def one_binding(views):
    """(binding, [(element offset, row stride) of each]) when the views (Tensors or Cols) lie in
    one buffer, so a kernel can read them all through one binding; else None. What a kernel
    reading packed tensors (pack_rows, pack_params) or an op's side-by-side outputs binds."""
    from py_engine.ops.conv1d import view
    vs = [view(a) for a in views]
    buf = vs[0][0][0]
    if any(v[0][0] is not buf for v in vs):
        return None
    base = min(v[0][1] for v in vs)
    end = max(v[0][1] + v[0][2] for v in vs)
    return (buf, base, end - base), [((v[0][1] - base) // 4 + v[1], v[2]) for v in vs]


def pack_params(device, tensors):
    """pack_rows for a layer's small f32 parameters of any shape (biases, D, norm weights,
    MIMO's projections): one buffer a decode kernel reads through one binding, each parameter
    at its own aligned offset (one_binding gives the offsets). A Mac's Chrome binds
    10 storage buffers a shader stage (gpu/settings.STORAGE_TIERS), so a step kernel that bound
    each parameter apart did not fit there. Same refusals as pack_rows, and any tensor not
    f32."""
    ts = list(tensors)
    if len(ts) < 2 or any(not isinstance(t, Tensor) or t.dtype != "f32" for t in ts):
        return False
    return _pack(device, ts)


def _pack(device, ts):
    if is_packed(device, ts) or any(not t.pooled or t.buffer is None for t in ts):
        return False
    starts, end = aligned_offsets([t.nbytes for t in ts], device.align)
    pool = ts[0].pool
    buf = pool.acquire(end)
    batch = device.batch()
    for t, s in zip(ts, starts):
        batch.copy(t.buffer, t.offset, buf, s, t.nbytes)
    batch.submit()                   # the copies are queued before the old buffers go
    old, kept = [], []
    for i, (t, s) in enumerate(zip(ts, starts)):
        if t.buffer.size <= KEEP_BYTES:
            kept.append(t.buffer)
            t.pool.release(t.buffer)  # queued after the copies, so a reuse writes after they read
        else:
            old.append(t.buffer)
            t.pool.forget(t.buffer)
        t.buffer, t.offset = buf, s
        t.pooled, t.pool = (True, pool) if i == 0 else (False, None)
    device.forget_bindings(kept)     # as a destroyed buffer's: no cached bind group outlives its use
    device.destroy_many(old)         # WebGPU frees them once the queued copies have read them
    return True


# A packed tensor's old buffer up to this size goes back to its pool rather than being
# destroyed: a small parameter's buffer is as likely to have come from the pool's free list,
# and destroying those shrank the pool on every model load (a load/unload cycle left two
# buffers fewer than the one before: tests/browser/test_faults_soak.py), where giving them back
# reaches a fixed point after one cycle. Larger ones (weight row blocks) are destroyed, so their
# bytes are not held twice.
KEEP_BYTES = 64 * 1024

