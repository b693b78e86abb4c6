"""Weights larger than one GPU binding, held as row blocks.

WebGPU binds at most `maxStorageBufferBindingSize` bytes of a buffer to one shader variable
(128 MiB is WebGPU's default and lavapipe's own limit; the engine requests the adapter's limits,
which are larger on many desktop GPUs, but not on all). A 50280 x 768 f32 embedding (mamba-130m: 154 MB) or 50280 x 2048 (mamba-1.4b: 412 MB)
is past that, so the loader (py_engine/io/hf_loader.py) holds such a table as `RowChunks`: row
blocks [r0, r1), each its own Tensor (and buffer) within the limit, every block but the last a
multiple of ALIGN_ROWS rows (when that many rows fit), so a block's first column of the logits
[M, V] (4 * r0 bytes in) is a legal 256-byte-aligned binding offset.

Which tensors may be split, and the refusal of what cannot fit, before any byte is read:
`plan_blocks` (py_engine/io/gpu_layout.py). Which ops read a RowChunks: the embedding gather and
its backward (py_engine/ops/embedding.py: one dispatch per block, each serving the ids in its
rows), and the linear products of the LM head (py_engine/ops/row_chunks.py: each block writes
its slice of the logits, decode mat-vec or prefill GEMM, every weight format; the backward
products for training). A model whose tables fit runs exactly the dispatches it ran before.
Any other op that meets a RowChunks gets one sentence (DeviceLimitError) from `.binding`.
"""
from py_engine.gpu.errors import DeviceLimitError

ALIGN_ROWS = 64          # 64 f32 columns = 256 bytes: the WebGPU binding-offset alignment
MIB = 2 ** 20


def size_text(nbytes) -> str:
    """Bytes as text: "154.4 MiB", or below 0.1 MiB (a test's tiny cap) "8192 bytes"."""
    return f"{nbytes / MIB:.1f} MiB" if nbytes >= MIB // 10 else f"{int(nbytes)} bytes"


def binding_limit(device) -> int:
    """Bytes one tensor may take on `device`: the storage-binding limit (with a test's cap,
    Device.max_binding), and no more than the largest pooled buffer within maxBufferSize (each
    block is its own buffer, rounded up to a size class: py_engine/gpu/pool.py)."""
    limits = device.limits
    bind = getattr(device, "max_binding", None)
    if bind is None:
        bind = limits.get("maxStorageBufferBindingSize", 1 << 27)
    return int(min(bind, largest_class(int(limits.get("maxBufferSize", 1 << 28)))))


def limit_phrase(device, limit=None) -> str:
    """What binding_limit(device) is, for a refusal: "this GPU binds at once (128.0 MiB)", or,
    when maxBufferSize is the tighter one, "this GPU's maxBufferSize allows (8192 bytes)"."""
    limit = binding_limit(device) if limit is None else limit
    bind = getattr(device, "max_binding", None)
    if bind is None:
        bind = device.limits.get("maxStorageBufferBindingSize", 1 << 27)
    if limit < bind:
        return f"this GPU's maxBufferSize allows ({size_text(limit)})"
    return f"this GPU binds at once ({size_text(limit)})"


def largest_class(m) -> int:
    """The largest pool size class (2^k or 3 * 2^k bytes) that is at most m."""
    if m < 256:
        return m
    p2 = 1 << (m.bit_length() - 1)
    p3 = 3 << ((m // 3).bit_length() - 1)
    return max(p2, p3)


def row_blocks(n_rows, row_bytes, limit):
    """[(r0, r1)] splitting n_rows rows of row_bytes each into blocks of at most `limit` bytes
    (balanced, every block but the last a multiple of ALIGN_ROWS rows when ALIGN_ROWS rows fit;
    else as many rows as fit, and the ops copy logit columns instead of binding them in place);
    None when the whole tensor fits; [] when not even one row fits (the caller refuses)."""
    if n_rows * row_bytes <= limit:
        return None
    fit = limit // row_bytes
    if fit == 0:
        return []
    align = ALIGN_ROWS if fit >= ALIGN_ROWS else 1
    per = fit // align * align
    n = -(-n_rows // per)
    size = -(-(-(-n_rows // n)) // align) * align      # <= per
    return [(r0, min(r0 + size, n_rows)) for r0 in range(0, n_rows, size)]


class RowChunks:
    """A weight of logical shape [N, ...] stored as row blocks `parts` [(r0, r1, Tensor)] in
    row order (each Tensor [r1 - r0, ...], all of one dtype). Reads like a Tensor where that
    makes sense (shape, dtype, numel, nbytes, release, to_bytes); it has no single binding."""
    __slots__ = ("device", "shape", "parts", "name")

    def __init__(self, device, shape, parts, name=None):
        self.device, self.shape, self.name = device, tuple(int(s) for s in shape), name
        self.parts = list(parts)
        if not self.parts or self.parts[0][0] != 0 or self.parts[-1][1] != self.shape[0] or any(
                a[1] != b[0] for a, b in zip(self.parts, self.parts[1:])):
            raise ValueError(f"row blocks {[(a, b) for a, b, _ in self.parts]} do not cover "
                             f"the {self.shape[0]} rows of {name or 'the tensor'}")

    @property
    def dtype(self):
        return self.parts[0][2].dtype

    @property
    def numel(self) -> int:
        return sum(t.numel for _, _, t in self.parts)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for _, _, t in self.parts)

    @property
    def tensors(self):
        return [t for _, _, t in self.parts]

    @property
    def pooled(self):
        return all(t.pooled for t in self.tensors)

    @property
    def binding(self):
        lim = binding_limit(self.device)
        raise DeviceLimitError(
            f"{self.name or 'a tensor'} {list(self.shape)} is held as {len(self.parts)} row "
            f"blocks (it is larger than this GPU's {size_text(lim)} storage binding limit) "
            "and this operation reads tensors whole: only the embedding gather and the LM head "
            "read split tensors")

    buffer = binding          # same refusal for code that wants the buffer

    def map(self, fn):
        """A RowChunks over the same rows with fn(part) for every part (e.g. quantize)."""
        return RowChunks(self.device, self.shape, [(a, b, fn(t)) for a, b, t in self.parts],
                         self.name)

    def release(self):
        for t in self.tensors:
            t.release()

    async def to_bytes(self) -> bytes:
        """The blocks' bytes in row order: for f32 exactly the whole tensor's bytes (narrow
        formats: each block packed with its own scales)."""
        return b"".join([await t.to_bytes() for t in self.tensors])

    def __repr__(self):
        return (f"RowChunks({list(self.shape)}, {self.dtype}, "
                f"{[(a, b) for a, b, _ in self.parts]})")


def flat(tensors):
    """Tensors with every RowChunks replaced by its blocks."""
    out = []
    for t in tensors:
        if isinstance(t, RowChunks):
            out.extend(t.tensors)
        else:
            out.append(t)
    return out
