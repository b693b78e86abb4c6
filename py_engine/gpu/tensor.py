"""A GPU tensor: a byte range of a buffer plus shape and dtype. Row-major, f32 by default.

Narrow weight formats (py_engine/ops/weight_format.py; layouts in shaders/lib/weight_formats.wgsl)
are tensors too: dtype "f16"/"bf16" (two values per u32), "q8" (int8 + one f32 scale per row)
and "q4" (4-bit + one f16 scale per group of 32), shape the logical [N, K]; their buffer holds
the packed values followed by the scales, rounded up to 16 bytes for vec4 bindings."""
import struct
from math import prod

ITEMSIZE = {"f32": 4, "i32": 4, "u32": 4, "f16": 2, "bf16": 2, "i8": 1}
STRUCT = {"f32": "f", "i32": "i", "u32": "I"}


def storage_bytes(shape, dtype) -> int:
    """Bytes a tensor of `shape` and `dtype` occupies (4-byte multiple; packed formats 16)."""
    n = prod(shape)
    if dtype == "q8":        # int8 values, then one f32 scale per row
        return (n + 4 * (n // shape[-1]) + 15) & ~15
    if dtype == "q4":        # nibbles, then one f16 scale per 32 values
        return (n // 2 + 2 * (-(-n // 32)) + 15) & ~15
    if dtype in ("f16", "bf16") and len(shape) == 2:
        return (n * 2 + 15) & ~15
    return (n * ITEMSIZE[dtype] + 3) & ~3


def aligned_offsets(sizes, align):
    """([start of each], total bytes) of byte ranges of `sizes` laid one after another in one
    buffer, each starting at a multiple of `align` (a binding's offset alignment)."""
    starts, end = [], 0
    for n in sizes:
        starts.append(end)
        end += -(-int(n) // align) * align
    return starts, end


class Tensor:
    __slots__ = ("device", "shape", "dtype", "buffer", "offset", "pooled", "pool")

    def __init__(self, device, shape, dtype="f32", buffer=None, offset=0):
        self.device = device
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.pooled = buffer is None
        # Remember which pool: a recorded graph draws from a private pool (Device.private_pool)
        self.pool = device.pool if buffer is None else None
        self.buffer = self.pool.acquire(self.nbytes) if buffer is None else buffer
        self.offset = offset

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return storage_bytes(self.shape, self.dtype)

    @property
    def binding(self):
        """(buffer, offset, size) for a bind group entry."""
        return (self.buffer, self.offset, max(4, self.nbytes))

    def view(self, shape):
        """The same bytes under another row-major shape (no copy; the view never releases)."""
        v = Tensor.__new__(Tensor)
        v.device, v.dtype, v.buffer, v.offset = self.device, self.dtype, self.buffer, self.offset
        v.shape, v.pooled, v.pool = tuple(int(s) for s in shape), False, None
        if v.numel != self.numel:
            raise ValueError(f"cannot view {list(self.shape)} as {list(shape)}")
        return v

    @classmethod
    def from_bytes(cls, device, shape, data, dtype="f32"):
        t = cls(device, shape, dtype)
        device.write(t.buffer, data, t.offset)
        return t

    @classmethod
    def from_list(cls, device, shape, values, dtype="f32"):
        return cls.from_bytes(device, shape, struct.pack(f"<{len(values)}{STRUCT[dtype]}", *values), dtype)

    async def to_bytes(self) -> bytes:
        size = self.nbytes if self.dtype in ("q8", "q4") else self.numel * ITEMSIZE[self.dtype]
        return await self.device.read(self.buffer, self.offset, size)

    async def to_list(self):
        data = await self.to_bytes()
        return list(struct.unpack(f"<{self.numel}{STRUCT[self.dtype]}", data))

    def rebind(self, buffer, offset):
        """Give this tensor's own buffer back and make it a view of `buffer` at `offset` (which
        its owner releases): the same object, so whoever holds it sees the new bytes
        (ModelState packs its layers' states into one buffer this way)."""
        self.release()
        self.buffer, self.offset, self.pooled, self.pool = buffer, offset, False, None

    def release(self):
        """Give the buffer back to the pool (pooled tensors only)."""
        if self.pooled and self.buffer is not None:
            self.pool.release(self.buffer)
        self.buffer = None

    def __repr__(self):
        return f"Tensor({list(self.shape)}, {self.dtype})"
