"""safetensors headers: parse, validate and write them without numpy.

File layout (https://github.com/huggingface/safetensors):
  [0..8)        u64 little-endian N = header length
  [8..8+N)      UTF-8 JSON: {"__metadata__": {str: str}?, name: {"dtype", "shape",
                "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8
  [8+N..)       tensor bytes; data_offsets are relative to 8+N

The browser fetches only the first bytes of a file (a Range request), so parsing works from
a prefix plus the total file size; tensor data never passes through here. Offsets returned
are absolute file offsets, ready for the next Range request.

Pure stdlib: this module is imported inside Pyodide.
"""
import json
import struct
from dataclasses import dataclass, field

# dtype -> bytes per element. These are the storage types the engine widens in WGSL.
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}
# The safetensors library writes tensors grouped by dtype, largest alignment first
# (its Dtype enum order, descending), then by name; mirrored so our files are byte-identical.
_SAFETENSORS_DTYPE_RANK = {"F32": 3, "BF16": 2, "F16": 1, "I8": 0}
# The safetensors library refuses headers above 100 MB; so do we, before allocating.
MAX_HEADER_BYTES = 100_000_000


class NeedMoreBytes(ValueError):
    """The prefix given is too short; `needed` bytes from offset 0 are required."""

    def __init__(self, file, needed):
        super().__init__(f"{file}: need the first {needed} bytes to parse the header")
        self.file = file
        self.needed = needed


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str          # one of DTYPE_SIZES
    shape: tuple
    start: int          # absolute file offset of the first byte
    end: int            # absolute file offset one past the last byte

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self):
        return self.end - self.start


@dataclass
class SafetensorsHeader:
    tensors: list                     # [TensorInfo], sorted by start
    metadata: dict = field(default_factory=dict)
    data_start: int = 0               # 8 + N
    file_size: int = 0

    def by_name(self):
        return {t.name: t for t in self.tensors}


def header_length(first8, file_size, file="<safetensors>"):
    """N from the first 8 bytes, checked against the file size."""
    if file_size < 8:
        raise ValueError(f"{file}: {file_size} bytes is too short for a safetensors file "
                         "(needs at least the 8-byte header length)")
    if len(first8) < 8:
        raise NeedMoreBytes(file, 8)
    (n,) = struct.unpack("<Q", bytes(first8[:8]))
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"{file}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit "
                         "(not a safetensors file, or corrupt)")
    if 8 + n > file_size:
        raise ValueError(f"{file}: header length {n} runs past the end of the "
                         f"{file_size}-byte file (truncated or not safetensors)")
    return n


def parse_header(prefix, file_size, file="<safetensors>"):
    """Parse and validate the header from the file's first bytes (at least 8 + N of them)."""
    n = header_length(prefix, file_size, file)
    if len(prefix) < 8 + n:
        raise NeedMoreBytes(file, 8 + n)
    raw = bytes(prefix[8:8 + n])
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{file}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{file}: header must be a JSON object, got {type(obj).__name__}")
    data_start = 8 + n
    data_len = file_size - data_start
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{file}: __metadata__ must map strings to strings")
    tensors = [_tensor_info(file, name, entry, data_start, data_len)
               for name, entry in obj.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    prev = None
    for t in tensors:
        if prev is not None and t.start < prev.end:
            raise ValueError(f"{file}: tensor {t.name!r} bytes [{t.start}, {t.end}) overlap "
                             f"tensor {prev.name!r} bytes [{prev.start}, {prev.end})")
        if t.nbytes:
            prev = t
    return SafetensorsHeader(tensors, metadata, data_start, file_size)


def _tensor_info(file, name, entry, data_start, data_len):
    where = f"{file}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: entry must be an object")
    dtype = entry.get("dtype")
    if dtype not in DTYPE_SIZES:
        raise ValueError(f"{where}: dtype {dtype!r} is not supported; supported: "
                         + ", ".join(DTYPE_SIZES))
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    offs = entry.get("data_offsets")
    if (not isinstance(offs, list) or len(offs) != 2 or not all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
        raise ValueError(f"{where}: data_offsets must be [begin, end] integers, got {offs!r}")
    begin, end = offs
    if end < begin:
        raise ValueError(f"{where}: data_offsets end {end} is before begin {begin}")
    numel = 1
    for s in shape:
        numel *= s
    want = numel * DTYPE_SIZES[dtype]
    if end - begin != want:
        raise ValueError(f"{where}: shape {shape} x {dtype} is {want} bytes but data_offsets "
                         f"[{begin}, {end}] hold {end - begin}")
    if end > data_len:
        raise ValueError(f"{where}: data_offsets [{begin}, {end}] run past the end of the data "
                         f"({data_len} bytes after the header; file truncated?)")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


def read_header(path):
    """Host/Pyodide-FS helper: parse the header of a file on disk, reading only the header."""
    import os
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        first8 = f.read(8)
        n = header_length(first8, size, str(path))
        return parse_header(first8 + f.read(n), size, str(path))


# --- writing ----------------------------------------------------------------

def safetensors_order(entries):
    """Sort (name, dtype, shape) entries the way the safetensors library lays out data."""
    return sorted(entries, key=lambda e: (-_SAFETENSORS_DTYPE_RANK[e[1]], e[0]))


def build_header(entries, metadata=None, file="<safetensors>"):
    """Header bytes (length prefix + padded JSON) and the TensorInfo of each entry.

    entries: [(name, dtype, shape)] in the order their bytes will follow the header. The
    caller then writes each tensor's little-endian bytes back to back, in that order. Passing
    `safetensors_order(entries)` gives files byte-identical to safetensors.save_file.
    """
    obj = {}
    if metadata:
        obj["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    layout = []
    for name, dtype, shape in entries:
        if name == "__metadata__" or name in obj:
            raise ValueError(f"{file}: tensor name {name!r} is reserved or repeated")
        if dtype not in DTYPE_SIZES:
            raise ValueError(f"{file}: tensor {name!r}: dtype {dtype!r} is not supported; "
                             "supported: " + ", ".join(DTYPE_SIZES))
        numel = 1
        for s in shape:
            numel *= int(s)
        nbytes = numel * DTYPE_SIZES[dtype]
        obj[name] = {"dtype": dtype, "shape": [int(s) for s in shape],
                     "data_offsets": [offset, offset + nbytes]}
        layout.append((name, dtype, tuple(int(s) for s in shape), offset, offset + nbytes))
        offset += nbytes
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad with spaces so the data starts 8-byte aligned (what the safetensors library does).
    body += b" " * ((8 - len(body) % 8) % 8)
    head = struct.pack("<Q", len(body)) + body
    base = len(head)
    infos = [TensorInfo(n, dt, sh, base + b, base + e) for n, dt, sh, b, e in layout]
    return head, infos


# --- sharded checkpoints -------------------------------------------------------

def parse_index(text, file="model.safetensors.index.json"):
    """model.safetensors.index.json -> {tensor name: shard file name}."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    wm = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise ValueError(f"{file}: missing a non-empty 'weight_map' object")
    for name, shard in wm.items():
        if not isinstance(shard, str) or not shard:
            raise ValueError(f"{file}: weight_map[{name!r}] must be a file name, got {shard!r}")
        if shard.startswith(("/", "\\")) or ".." in shard.replace("\\", "/").split("/"):
            raise ValueError(f"{file}: weight_map[{name!r}] = {shard!r} points outside "
                             "the model folder")
    return dict(wm)


def build_index(weight_map, total_size, metadata=None):
    """The JSON text of a model.safetensors.index.json, as transformers writes it."""
    meta = {"total_size": int(total_size)}
    if metadata:
        meta.update(metadata)
    return json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))},
                      indent=2) + "\n"
