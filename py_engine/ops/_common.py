"""Helpers shared by the op modules: uniform packing, grid folding, output allocation."""
import struct
from math import prod

from py_engine.gpu.tensor import Tensor

ADD_BIAS = 1
ACCUMULATE = 2
MAX_GROUPS = 65535


_PACKED = {}     # params' results by (value, type) list: a recorded graph packs the same ones again


def params(*values) -> bytes:
    """Pack ints as u32 and floats as f32, zero-padded to a 16-byte multiple (uniform rules)."""
    key = values + tuple(map(type, values))      # 1 and 1.0 are equal keys but pack apart
    data = _PACKED.get(key)
    if data is None:
        fmt = "".join("f" if isinstance(v, float) else "I" for v in values)
        data = struct.pack("<" + fmt, *values)
        data += b"\0" * (-len(data) % 16)
        if len(_PACKED) > 8192:                  # steps and offsets that never repeat
            _PACKED.clear()
        _PACKED[key] = data
    return data


DEFAULT_WG_STORAGE = 16384   # WebGPU's default maxComputeWorkgroupStorageSize


def workgroup_storage(device) -> int:
    """Bytes of workgroup memory a kernel of this device may use (maxComputeWorkgroupStorageSize;
    WebGPU's default where the device, or a test's stand-in, states none)."""
    limits = getattr(device, "limits", None) or {}
    return int(limits.get("maxComputeWorkgroupStorageSize", DEFAULT_WG_STORAGE))


def f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def fold(groups: int):
    """Split a 1-D workgroup count into (x, y) with x <= 65535; kernels index x + y * nx."""
    if groups <= MAX_GROUPS:
        return max(groups, 1), 1
    y = -(-groups // MAX_GROUPS)
    return -(-groups // y), y


def rows_of(t: Tensor) -> int:
    return prod(t.shape[:-1]) if len(t.shape) > 1 else 1


def out_like(device, shape, out=None):
    if out is not None:
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"out has shape {list(out.shape)}, expected {list(shape)}")
        return out
    return Tensor(device, shape)


def dummy(device):
    """A small zero buffer for bindings a kernel declares but this call does not use."""
    buf = getattr(device, "_dummy", None)
    if buf is None:
        buf = device.buffer(256, label="dummy")
        device.write(buf, bytes(256))
        device._dummy = buf
    return buf
