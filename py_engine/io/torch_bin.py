"""PyTorch `pytorch_model.bin` checkpoints read without torch: tensor names, dtypes, shapes and
the ABSOLUTE byte range of each tensor's data, the same TensorInfo the safetensors parser
gives, so the loader streams the bytes straight to the GPU. Pure stdlib (runs in Pyodide).

File layout (torch.save since torch 1.6, `_use_new_zipfile_serialization=True`):
  a ZIP archive, every entry STORED (not compressed), names under one folder <a>/:
    <a>/data.pkl          pickle (protocol 2) of the saved object, normally a (Ordered)dict
                          name -> tensor; tensors are REDUCE calls such as
                          torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                          requires_grad, backward_hooks[, metadata]) whose storage is a
                          persistent id ('storage', torch.FloatStorage, key, location, numel)
    <a>/data/<key>        raw little-endian storage bytes (torch pads the local header's
                          extra field so they start 64-byte aligned)
    <a>/byteorder         "little" (absent before torch 1.10: little then too)
    <a>/version, <a>/.format_version, <a>/.storage_alignment, <a>/.data/serialization_id
  A tensor is contiguous data at element storage_offset of its storage; its bytes are
  [data start of <a>/data/<key> + storage_offset * itemsize, + numel * itemsize).
  Large files use ZIP64: a ZIP64 end record, and ZIP64 extra fields in the central directory
  for sizes and offsets >= 4 GiB (local-header sizes are 0: torch writes data descriptors).

What is read: the end of the file (end-of-central-directory records), the central directory,
the local header of data.pkl / byteorder / each storage used (30 + name bytes, for the data
start), data.pkl and byteorder themselves. Never tensor data.

Security: data.pkl is unpickled with a restricted Unpickler whose find_class hands out only
small stand-ins for the handful of globals a state dict needs (collections.OrderedDict, the
torch._utils rebuild functions, torch storage classes and dtypes, torch.Tensor /
nn.Parameter as type markers). Every other global (os.system, numpy, any class) is refused
before anything is called, so loading a hostile file runs no code of its choosing.

Dtypes: F32, F16 and BF16 tensors are weights. Integer and bool tensors (I64 position_ids,
BatchNorm's num_batches_tracked, ...) are RETURNED with dtype "I64", "I32", "I16", "I8",
"U8", "U16", "U32", "U64" or "BOOL" so a loader can skip non-weight buffers by name (the HF
loader refuses, naming the tensor, any dtype it does not read). Float64, complex, float8,
quantized and sparse tensors are refused here, naming the tensor (or the global).

Result: a list (TorchBinTensors) of safetensors_format.TensorInfo sorted by (start, end, name);
names sharing one storage range (tied weights) each get an info for the same bytes. Its
`.wrapper` is None for a flat state dict, or the top-level key used when the state dict was
wrapped one level deep ({"state_dict": sd}, {"model": sd, "optimizer": ...}).

Entry points:
  await read_bin_header(source, fname)   via a byte source (size + ranged reads only)
  parse_bin_bytes(data, fname)           whole file in memory (host tools, tests)
Both drive one sans-IO generator (_parse) that yields lists of byte ranges it needs.
"""
import asyncio
import collections
import io
import pickle
import struct

from py_engine.io.safetensors_format import TensorInfo

# dtypes returned, and their bytes per element. Floats other than these are refused.
WEIGHT_DTYPES = ("F32", "F16", "BF16")
INT_DTYPES = ("I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL")
ITEM_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
              # refused (sizes kept so bounds are still checked before the refusal matters)
              "F64": 8, "C64": 8, "C128": 16, "C32": 4}

# torch.<X>Storage (legacy typed storages, what _rebuild_tensor_v2 receives) -> dtype.
_STORAGE_DTYPES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16",
    "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64", "ComplexDoubleStorage": "C128",
    "QInt8Storage": "quantized", "QUInt8Storage": "quantized", "QInt32Storage": "quantized",
    "QUInt4x2Storage": "quantized", "QUInt2x4Storage": "quantized",
}
# torch.<dtype> globals (seen as _rebuild_tensor_v3's dtype argument) -> dtype.
_TORCH_DTYPES = {
    "float32": "F32", "float": "F32", "float16": "F16", "half": "F16", "bfloat16": "BF16",
    "float64": "F64", "double": "F64", "int64": "I64", "long": "I64", "int32": "I32",
    "int": "I32", "int16": "I16", "short": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "uint16": "U16", "uint32": "U32", "uint64": "U64", "complex64": "C64",
    "complex128": "C128", "complex32": "C32", "chalf": "C32", "cfloat": "C64",
    "cdouble": "C128",
    "float8_e4m3fn": "float8", "float8_e5m2": "float8", "float8_e4m3fnuz": "float8",
    "float8_e5m2fnuz": "float8", "float8_e8m0fnu": "float8", "float4_e2m1fn_x2": "float4",
}
# The only torch._utils / torch._tensor functions allowed; everything else is refused.
_HINTS = {
    "_rebuild_qtensor": "quantized tensors are not supported: dequantize() them and re-save",
    "_rebuild_sparse_tensor": "sparse tensors are not supported: save t.to_dense()",
    "_rebuild_nested_tensor": "nested tensors are not supported",
    "_rebuild_wrapper_subclass": "tensor subclasses are not supported: save plain tensors",
    "_rebuild_meta_tensor_no_storage": "meta tensors hold no data: save real tensors",
    "_rebuild_device_tensor_from_cpu_tensor": "save CPU tensors (t.cpu())",
    "_rebuild_device_tensor_from_numpy": "save CPU tensors (t.cpu())",
}
MAX_PICKLE_BYTES = 100_000_000
_TAIL = 65536 + 22 + 20 + 56     # max EOCD comment + EOCD + ZIP64 locator + ZIP64 end record
_RESAVE = ("re-save the state dict with safetensors "
           "(safetensors.torch.save_file(state_dict, 'model.safetensors'))")
# torch's legacy (non-ZIP) format starts with this magic number, pickled as a LONG1
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_MAX_PARALLEL_READS = 16
# Local headers of small storages sit close together: one request for a run of them costs
# less than a round trip each, while large tensors' bytes in between are never fetched.
_COALESCE_GAP = 16 * 1024        # merge ranged reads whose gap is at most this
_COALESCE_MAX = 2**20            # ... unless the merged read would exceed this


class TorchBinTensors(list):
    """[TensorInfo] sorted by (start, end, name), plus where they came from."""

    def __init__(self, infos, wrapper=None, file_size=0):
        super().__init__(infos)
        self.wrapper = wrapper        # None, or the top-level key the state dict was under
        self.file_size = file_size

    def by_name(self):
        return {t.name: t for t in self}


# --- entry points -----------------------------------------------------------------------

async def read_bin_header(source, fname):
    """TorchBinTensors of `fname` read through a byte source: `await source.size(fname)` and
    `await source.read(fname, start, end)` of small ranges only."""
    where = source.where(fname) if hasattr(source, "where") else fname
    size = await source.size(fname)
    gen = _parse(where, size)
    reply = None
    while True:
        try:
            ranges = gen.send(reply)
        except StopIteration as stop:
            return stop.value
        merged = _coalesce(ranges)
        got = []
        for i in range(0, len(merged), _MAX_PARALLEL_READS):
            part = merged[i:i + _MAX_PARALLEL_READS]
            got += await asyncio.gather(*(source.read(fname, a, b) for a, b in part))
        for (a, b), data in zip(merged, got):
            if len(data) != b - a:
                raise ValueError(f"{where}: bytes [{a}, {b}): got {len(data)} bytes instead of "
                                 f"{b - a} (file truncated or changed while reading?)")
        reply = _split(ranges, merged, got)


def parse_bin_bytes(data, fname="<pytorch_model.bin>"):
    """TorchBinTensors of a whole .bin file held in memory (bytes, bytearray or memoryview)."""
    mv = memoryview(data).cast("B")
    gen = _parse(fname, len(mv))
    reply = None
    while True:
        try:
            ranges = gen.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = [bytes(mv[a:b]) for a, b in ranges]


def read_bin_file(path):
    """Host helper: TorchBinTensors of a .bin on disk, reading only what parsing needs."""
    import os
    fname = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        gen = _parse(fname, size)
        reply = None
        while True:
            try:
                ranges = gen.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = []
            for a, b in ranges:
                fh.seek(a)
                reply.append(fh.read(b - a))


def _coalesce(ranges):
    """Sorted, merged copy of `ranges` (nearby small reads become one request)."""
    out = []
    for a, b in sorted(set(ranges)):
        if (out and a - out[-1][1] <= _COALESCE_GAP
                and max(b, out[-1][1]) - out[-1][0] <= _COALESCE_MAX):
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def _split(ranges, merged, got):
    out = []
    for a, b in ranges:
        for (ma, mb), data in zip(merged, got):
            if ma <= a and b <= mb:
                out.append(bytes(data[a - ma:b - ma]))
                break
    return out


# --- the parser (sans-IO: yields [(start, end)], receives [bytes]) -------------------------

def _parse(fname, size):
    if size < 22:
        raise ValueError(f"{fname}: {size} bytes is too short for a torch.save checkpoint "
                         "(a ZIP archive); truncated?")
    tail_start = max(0, size - _TAIL)
    head, tail = yield [(0, min(size, 64)), (tail_start, size)]
    if not head.startswith(b"PK\x03\x04"):
        raise ValueError(_not_zip(fname, head))
    entries, cd_start = yield from _central_directory(fname, size, tail, tail_start)

    # The archive folder: torch names every entry <a>/..., and data.pkl says which <a>.
    pkls = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pkls:
        if any(n.endswith("/model.json") or n == "model.json" for n in entries):
            raise ValueError(f"{fname}: a TorchScript archive of the old format, not a "
                             f"torch.save state dict; load it with torch and {_RESAVE}")
        raise ValueError(f"{fname}: a ZIP archive without <folder>/data.pkl: not a torch.save "
                         "checkpoint (entries: " + ", ".join(list(entries)[:5]) + ")")
    # torch reads the folder of the first entry; fall back to the only data.pkl there is
    pkl = next(iter(entries)).split("/")[0] + "/data.pkl"
    if pkl not in entries:
        pkl = pkls[0]
    prefix = pkl[:-len("data.pkl")]
    if any(n.startswith(prefix + "code/") for n in entries):
        raise ValueError(f"{fname}: a TorchScript archive (torch.jit.save), not a torch.save "
                         f"state dict; load it with torch.jit.load and {_RESAVE}")
    small = [pkl] + ([prefix + "byteorder"] if prefix + "byteorder" in entries else [])
    for name in small:
        _check_entry(fname, entries[name], cd_start, size)
        if entries[name].size > MAX_PICKLE_BYTES:
            raise ValueError(f"{fname}: {name} is {entries[name].size} bytes, over the "
                             f"{MAX_PICKLE_BYTES}-byte limit for a state dict's pickle")
    starts = yield from _data_starts(fname, [entries[n] for n in small], cd_start, size)
    blobs = yield [(starts[n], starts[n] + entries[n].size) for n in small]
    if len(small) == 2 and blobs[1].strip() != b"little":
        raise ValueError(f"{fname}: byteorder is {blobs[1][:20]!r}, not 'little': load it with "
                         f"torch on this machine and {_RESAVE}")

    top = _unpickle(fname, blobs[0])
    wrapper, state = _select_state_dict(fname, top)

    # Validate every tensor (errors name it), then find where each storage's bytes start.
    found = []
    for name, ref in state.items():
        dtype, shape, key, b0, b1 = _check_tensor(fname, name, ref)
        entry = entries.get(prefix + "data/" + key)
        if entry is None:
            raise ValueError(f"{fname}: tensor {name!r}: storage {key!r} has no data record "
                             f"{prefix}data/{key} in the archive (file corrupt or truncated)")
        if b1 > entry.size:
            raise ValueError(f"{fname}: tensor {name!r}: bytes [{b0}, {b1}) of storage {key!r} "
                             f"run past its {entry.size}-byte data record (file corrupt)")
        found.append((name, dtype, shape, entry, b0, b1))
    used = {e.name: e for _, _, _, e, _, _ in found}
    for e in used.values():
        _check_entry(fname, e, cd_start, size)
    starts = yield from _data_starts(fname, list(used.values()), cd_start, size)
    infos = [TensorInfo(name, dtype, shape, starts[e.name] + b0, starts[e.name] + b1)
             for name, dtype, shape, e, b0, b1 in found]
    infos.sort(key=lambda t: (t.start, t.end, t.name))
    return TorchBinTensors(infos, wrapper, size)


def _not_zip(fname, head):
    if head[:2] == b"\x80\x02" and _LEGACY_MAGIC in head[:16]:
        why = ("the legacy (non-ZIP) torch.save format, written by torch < 1.6 or with "
               "_use_new_zipfile_serialization=False; re-save it with a current torch "
               "(torch.save(torch.load(f), f)) or " + _RESAVE)
    elif head[:4] == b"SJBM":
        why = "an MBJS file (read it with py_engine.io.mbjs), not a torch checkpoint"
    elif len(head) > 8 and head[8:9] == b"{":
        why = "a safetensors file, not a torch checkpoint (rename it .safetensors)"
    elif head[:1] == b"\x80":
        why = "a bare pickle, not a torch.save ZIP archive; " + _RESAVE
    else:
        why = "not a ZIP archive, so not a torch.save checkpoint (truncated or another format?)"
    return f"{fname}: {why}"


# --- ZIP -----------------------------------------------------------------------------------

class _Entry:
    __slots__ = ("name", "method", "flags", "size", "csize", "offset")

    def __init__(self, name, method, flags, size, csize, offset):
        self.name, self.method, self.flags = name, method, flags
        self.size, self.csize, self.offset = size, csize, offset


def _central_directory(fname, size, tail, tail_start):
    """{name: _Entry} in directory order, and the directory's start offset."""
    pos = _find_eocd(tail)
    if pos < 0:
        raise ValueError(f"{fname}: no ZIP end-of-central-directory record: the file is "
                         "truncated (or not a torch.save checkpoint)")
    (_, disk, cd_disk, _, n_total, cd_size, cd_off, _) = struct.unpack_from("<4sHHHHIIH", tail, pos)
    loc = pos - 20
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, z_disk, z_off, n_disks = struct.unpack_from("<4sIQI", tail, loc)
        if n_disks > 1:
            raise ValueError(f"{fname}: a multi-part ZIP archive is not supported")
        if z_off + 56 > size:
            raise ValueError(f"{fname}: ZIP64 end record offset {z_off} is past the end of "
                             "the file (corrupt)")
        if z_off >= tail_start:
            rec = tail[z_off - tail_start:z_off - tail_start + 56]
        else:
            (rec,) = yield [(z_off, z_off + 56)]
        if rec[:4] != b"PK\x06\x06":
            raise ValueError(f"{fname}: ZIP64 end record missing at offset {z_off} (corrupt)")
        (_, _, _, _, disk, cd_disk, _, n_total, cd_size, cd_off) = struct.unpack_from(
            "<4sQHHIIQQQQ", rec)
    elif 0xFFFFFFFF in (cd_size, cd_off) or n_total == 0xFFFF:
        raise ValueError(f"{fname}: ZIP64 sizes without a ZIP64 end record (corrupt)")
    if disk or cd_disk:
        raise ValueError(f"{fname}: a multi-part ZIP archive is not supported")
    if cd_off + cd_size > tail_start + pos:
        raise ValueError(f"{fname}: central directory [{cd_off}, {cd_off + cd_size}) runs past "
                         "its end record (truncated or corrupt)")
    if cd_off >= tail_start:
        cd = tail[cd_off - tail_start:cd_off - tail_start + cd_size]
    else:
        (cd,) = yield [(cd_off, cd_off + cd_size)]
    entries = {}
    p = 0
    for _ in range(n_total):
        if cd[p:p + 4] != b"PK\x01\x02" or p + 46 > len(cd):
            raise ValueError(f"{fname}: central directory entry {len(entries)} is malformed "
                             f"(at offset {cd_off + p})")
        (_, _, _, flags, method, _, _, _, csize, usize, n_len, x_len, c_len, disk_start, _, _,
         offset) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", cd, p)
        raw = bytes(cd[p + 46:p + 46 + n_len])
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        extra = cd[p + 46 + n_len:p + 46 + n_len + x_len]
        usize, csize, offset = _zip64_extra(fname, name, extra, usize, csize, offset)
        if name in entries:
            raise ValueError(f"{fname}: ZIP entry {name!r} appears twice (corrupt)")
        entries[name] = _Entry(name, method, flags, usize, csize, offset)
        p += 46 + n_len + x_len + c_len
    return entries, cd_off


def _find_eocd(tail):
    """Offset in `tail` of the end-of-central-directory record whose comment ends the file."""
    pos = len(tail) - 22
    while pos >= 0:
        pos = tail.rfind(b"PK\x05\x06", 0, pos + 4)
        if pos < 0:
            return -1
        (c_len,) = struct.unpack_from("<H", tail, pos + 20)
        if pos + 22 + c_len == len(tail):
            return pos
        pos -= 1
    return -1


def _zip64_extra(fname, name, extra, usize, csize, offset):
    """Sizes / offset, taking the 8-byte values of the ZIP64 extra field (id 1) for each field
    saturated at 0xFFFFFFFF, in the order usize, csize, offset."""
    q = 0
    while q + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, q)
        if tag == 1:
            vals = extra[q + 4:q + 4 + n]
            i = 0
            fields = [usize, csize, offset]
            for k in range(3):
                if fields[k] == 0xFFFFFFFF:
                    if i + 8 > len(vals):
                        raise ValueError(f"{fname}: ZIP entry {name!r}: ZIP64 extra field too "
                                         "short (corrupt)")
                    (fields[k],) = struct.unpack_from("<Q", vals, i)
                    i += 8
            return tuple(fields)
        q += 4 + n
    if 0xFFFFFFFF in (usize, csize, offset):
        raise ValueError(f"{fname}: ZIP entry {name!r} needs a ZIP64 extra field (corrupt)")
    return usize, csize, offset


def _check_entry(fname, e, cd_start, size):
    if e.method != 0 or e.csize != e.size:
        how = {8: "deflate", 12: "bzip2", 14: "lzma", 93: "zstd"}.get(e.method,
                                                                     f"method {e.method}")
        raise ValueError(f"{fname}: ZIP entry {e.name!r} is compressed ({how}); torch.save "
                         "stores entries uncompressed, so the file was re-zipped: unzip and "
                         "re-save it with torch.save, or " + _RESAVE)
    if e.flags & 1:
        raise ValueError(f"{fname}: ZIP entry {e.name!r} is encrypted")
    if e.offset + 30 > cd_start:
        raise ValueError(f"{fname}: ZIP entry {e.name!r} header offset {e.offset} is not "
                         "before the central directory (corrupt)")


def _data_starts(fname, entries, cd_start, size):
    """{name: absolute offset of the entry's data}, from each local header (whose extra field,
    torch's alignment padding, is not in the central directory)."""
    want = [(e.offset, e.offset + 30 + len(e.name.encode("utf-8"))) for e in entries]
    heads = yield want
    out = {}
    for e, h in zip(entries, heads):
        if len(h) < 30 or h[:4] != b"PK\x03\x04":
            raise ValueError(f"{fname}: ZIP entry {e.name!r}: no local header at offset "
                             f"{e.offset} (corrupt)")
        n_len, x_len = struct.unpack_from("<HH", h, 26)
        start = e.offset + 30 + n_len + x_len
        if start + e.size > cd_start:
            raise ValueError(f"{fname}: ZIP entry {e.name!r}: data [{start}, {start + e.size}) "
                             f"runs into the central directory at {cd_start} (truncated or "
                             "corrupt)")
        out[e.name] = start
    return out


# --- the restricted unpickler ------------------------------------------------------------

class _Marker:
    """A torch global that is only ever compared against, never called."""
    __slots__ = ("kind", "name", "dtype")

    def __init__(self, kind, name, dtype=None):
        self.kind, self.name, self.dtype = kind, name, dtype

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on {self.name} is not allowed")

    def __repr__(self):
        return self.name


class _Storage:
    """What persistent_load returns for ('storage', storage type, key, location, numel)."""
    __slots__ = ("key", "dtype", "numel", "type_name")

    def __init__(self, key, dtype, numel, type_name):
        self.key, self.dtype, self.numel, self.type_name = key, dtype, numel, type_name

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a storage is not allowed")


class _TensorRef:
    """A rebuilt tensor: the rebuild call's arguments, checked later by _check_tensor (so
    errors can name the tensor)."""
    __slots__ = ("storage", "offset", "size", "stride", "metadata", "dtype", "func")

    def __init__(self, func, storage, offset, size, stride, metadata, dtype=None):
        self.func, self.storage, self.offset = func, storage, offset
        self.size, self.stride, self.metadata, self.dtype = size, stride, metadata, dtype

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a tensor is not allowed")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef("_rebuild_tensor_v2", storage, storage_offset, size, stride, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    return _TensorRef("_rebuild_tensor_v3", storage, storage_offset, size, stride, metadata,
                      dtype)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data          # Python attributes on the Parameter (state) carry no weights


def _rebuild_from_type_v2(func, new_type, args, state):
    # A Tensor / Parameter with Python attributes: func(*args) builds the tensor itself.
    if func not in _REBUILDERS.values() or not isinstance(args, tuple):
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2 with {func!r} is not allowed")
    if not (isinstance(new_type, _Marker) and new_type.kind == "tensor_type"):
        raise pickle.UnpicklingError(f"tensor subclass {new_type!r} is not supported: "
                                     "save plain tensors")
    return func(*args)


_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ALLOWED = dict(_REBUILDERS)
_ALLOWED[("collections", "OrderedDict")] = collections.OrderedDict
_ALLOWED[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
_ALLOWED[("torch", "Tensor")] = _Marker("tensor_type", "torch.Tensor")
_ALLOWED[("torch.nn.parameter", "Parameter")] = _Marker("tensor_type", "torch.nn.Parameter")
for _n, _d in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _n)] = _Marker("storage_type", "torch." + _n, _d)
_ALLOWED[("torch", "UntypedStorage")] = _Marker("storage_type", "torch.UntypedStorage", "bytes")
_ALLOWED[("torch.storage", "UntypedStorage")] = _ALLOWED[("torch", "UntypedStorage")]
for _n, _d in _TORCH_DTYPES.items():
    _ALLOWED[("torch", _n)] = _Marker("dtype", "torch." + _n, _d)


class _Refused(ValueError):
    pass


class _Unpickler(pickle.Unpickler):
    def __init__(self, fname, data):
        super().__init__(io.BytesIO(data))
        self.fname = fname
        self.storages = {}

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        g = f"{module}.{name}"
        if name in _HINTS and module.startswith("torch"):
            why = _HINTS[name]
        elif module.startswith("torch") and ("qscheme" in name or name.startswith("per_")):
            why = _HINTS["_rebuild_qtensor"]
        elif module == "numpy" or module.startswith(("numpy.", "numpy_")):
            why = "numpy arrays are not supported: store torch tensors (torch.from_numpy(a))"
        elif module.startswith("__torch__"):
            why = "a TorchScript object, not a state dict"
        else:
            why = ("only tensors in (Ordered)dicts are read, and unpickling any other global "
                   "could run arbitrary code; save only the state dict "
                   "(torch.save(model.state_dict(), f))")
        raise _Refused(f"{self.fname}: data.pkl references the global {g}, which this reader "
                       f"refuses: {why}; or {_RESAVE}")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _Marker) or pid[1].kind != "storage_type"
                or not isinstance(pid[2], str) or not _is_int(pid[4]) or pid[4] < 0):
            raise _Refused(f"{self.fname}: data.pkl has an unexpected persistent id "
                           f"{str(pid)[:120]} (expected ('storage', torch.XStorage, key, "
                           "location, numel))")
        _, stype, key, _, numel = pid
        s = self.storages.get(key)
        if s is None:
            s = self.storages[key] = _Storage(key, stype.dtype, numel, stype.name)
        elif s.dtype != stype.dtype or s.numel != numel:
            raise _Refused(f"{self.fname}: storage {key!r} is used as both {s.type_name} of "
                           f"{s.numel} and {stype.name} of {numel} (corrupt)")
        return s


def _unpickle(fname, data):
    try:
        return _Unpickler(fname, data).load()
    except _Refused:
        raise
    except Exception as e:     # malformed pickle, wrong arity, a refused BUILD, ...
        raise ValueError(f"{fname}: data.pkl could not be read as a state dict "
                         f"({type(e).__name__}: {str(e)[:200]}); {_RESAVE}") from None


# --- state dict selection and tensor checks ----------------------------------------------

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "model_state", "net")


def _select_state_dict(fname, top):
    """(wrapper key or None, {name: _TensorRef})."""
    if not isinstance(top, dict):
        raise ValueError(f"{fname}: holds a {type(top).__name__}, not a dict of tensors; "
                         "save a state dict (torch.save(model.state_dict(), f))")

    def has_tensors(d):
        return isinstance(d, dict) and any(isinstance(v, _TensorRef) for v in d.values())

    if has_tensors(top):
        return None, _tensors_only(fname, top, "")
    cands = [k for k, v in top.items() if has_tensors(v)]
    if not cands:
        keys = ", ".join(repr(k) for k in list(top)[:8])
        raise ValueError(f"{fname}: no tensors at the top level or one level down "
                         f"(top-level keys: {keys or 'none'}); save a state dict")
    if len(cands) > 1:
        pref = [k for k in _WRAPPER_KEYS if k in cands]
        if not pref:
            raise ValueError(f"{fname}: several dicts of tensors at the top level "
                             f"({', '.join(repr(k) for k in cands)}); save the one state dict "
                             "to load on its own")
        cands = pref[:1]
    key = cands[0]
    return key, _tensors_only(fname, top[key], f"{key}.")


def _tensors_only(fname, d, where):
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"{fname}: state dict key {where}{k!r} is not a string")
        if not isinstance(v, _TensorRef):
            raise ValueError(f"{fname}: entry {where + k!r} holds {type(v).__name__}, not a "
                             "tensor; save a dict holding only tensors")
    return d


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _check_tensor(fname, name, ref):
    """(dtype, shape, storage key, byte start, byte end within the storage) or ValueError."""
    at = f"{fname}: tensor {name!r}"
    s = ref.storage
    if not isinstance(s, _Storage):
        raise ValueError(f"{at}: its storage is not a checkpoint storage (corrupt)")
    if ref.func == "_rebuild_tensor_v3":
        if s.dtype != "bytes" or not (isinstance(ref.dtype, _Marker) and ref.dtype.kind == "dtype"):
            raise ValueError(f"{at}: _rebuild_tensor_v3 needs an untyped storage and a dtype")
        dtype, dname = ref.dtype.dtype, ref.dtype.name
    elif s.dtype == "bytes":
        dtype, dname = "U8", s.type_name
    else:
        dtype, dname = s.dtype, s.type_name
    if dtype not in WEIGHT_DTYPES and dtype not in INT_DTYPES:
        if dtype == "quantized":
            why = _HINTS["_rebuild_qtensor"]
        elif dtype == "F64":
            why = "float64 weights are not read"
        else:
            why = "weights must be float32, float16 or bfloat16"
        raise ValueError(f"{at} has dtype {dname}; {why}: convert with torch and re-save "
                         "({k: v.float() for k, v in sd.items()}, with torch.save or as "
                         "safetensors)")
    item = ITEM_SIZES[dtype]
    size, stride, off = ref.size, ref.stride, ref.offset
    if not (isinstance(size, tuple) and all(_is_int(x) and x >= 0 for x in size)):
        raise ValueError(f"{at}: size {size!r} is not a tuple of non-negative integers (corrupt)")
    if not (isinstance(stride, tuple) and len(stride) == len(size)
            and all(_is_int(x) for x in stride)):
        raise ValueError(f"{at}: stride {stride!r} does not match size {size} (corrupt)")
    if not (_is_int(off) and off >= 0):
        raise ValueError(f"{at}: storage offset {off!r} is not a non-negative integer")
    if isinstance(ref.metadata, dict) and any(ref.metadata.values()):
        raise ValueError(f"{at} has lazy tensor flags {sorted(ref.metadata)} set: save "
                         "t.resolve_conj().resolve_neg() instead")
    numel = 1
    for n in size:
        numel *= n
    expect = 1
    if numel:
        for n, st in zip(reversed(size), reversed(stride)):
            if n != 1 and st != expect:
                raise ValueError(
                    f"{at} is not contiguous (shape {tuple(size)}, stride {tuple(stride)}; a "
                    "transposed or strided view): save t.contiguous() instead "
                    "({k: v.contiguous() for k, v in sd.items()}), or " + _RESAVE)
            expect *= n
    cap = s.numel // item if s.dtype == "bytes" else s.numel     # storage elements
    if off + numel > cap or (numel == 0 and off > cap):
        raise ValueError(f"{at}: elements [{off}, {off + numel}) do not fit its storage "
                         f"{s.key!r} of {cap} elements (corrupt)")
    return dtype, tuple(size), s.key, off * item, (off + numel) * item
