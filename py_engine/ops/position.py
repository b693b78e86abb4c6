"""GPU-side decode positions (shaders/position.wgsl).

    pos   [Bsz] u32   tokens each sequence has seen; `advance` adds n on the GPU (1 dispatch),
                      so a recorded decode step carries the position forward when replayed.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import params


def new_positions(device, Bsz, start=0):
    """A [Bsz] u32 position buffer holding `start` for every sequence."""
    return Tensor.from_list(device, (Bsz,), [int(start)] * Bsz, "u32")


def advance(batch, pos, n):
    """pos[b] += n for every b (recorded into `batch`)."""
    count = pos.shape[0]
    batch.run("position", "position_advance",
              [batch.device.uniform(params(int(n), count, 0, 0)), pos.binding],
              -(-count // 64))


def set_positions(device, pos, value):
    """Host write: every sequence's position = value (reset, snapshot restore)."""
    import struct
    count = pos.shape[0]
    device.write(pos.buffer, struct.pack(f"<{count}I", *([int(value)] * count)), pos.offset)
