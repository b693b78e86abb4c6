"""torch_bin: pytorch_model.bin read without torch, checked against files torch.save writes.

Every accepted tensor's bytes at [start, end) must equal torch's own contiguous bytes; every
refusal must name the file and the tensor (or global) and say what to do. Hand-built
archives (a minimal ZIP writer, hand-written pickle opcodes) cover ZIP64, corrupt and hostile
files; the hand-built valid ones are first shown to load in torch.load.
"""
import asyncio
import concurrent.futures
import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import pytest
import torch

from py_engine.io.byte_sources import LocalSource
from py_engine.io.torch_bin import parse_bin_bytes, read_bin_file, read_bin_header

DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
      torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
      torch.uint16: "U16"}



def _run(coro):
    """asyncio.run in a fresh thread: the browser tests' Playwright session may already own
    this thread's event loop when the whole suite runs."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()

def _raw(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if t.dtype == torch.uint16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def _save(tmp_path, obj, name="pytorch_model.bin", **kw):
    path = tmp_path / name
    torch.save(obj, path, **kw)
    return path, path.read_bytes()


def _check_all(infos, blob, sd):
    by = infos.by_name()
    assert set(by) == set(sd)
    for name, t in sd.items():
        i = by[name]
        assert i.dtype == DT[t.dtype], name
        assert i.shape == tuple(t.shape), name
        assert i.nbytes == t.numel() * t.element_size(), name
        assert blob[i.start:i.end] == _raw(t), name
    assert [(i.start, i.end) for i in infos] == sorted((i.start, i.end) for i in infos)


def _state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, generator=g)
    mat = torch.randn(4, 3, generator=g)
    shared = torch.randn(2, 3, generator=g).half()
    return collections.OrderedDict([
        ("w3d", torch.randn(2, 3, 4, generator=g)),
        ("h1d", torch.randn(7, generator=g).half()),
        ("b2d", torch.randn(3, 5, generator=g).bfloat16()),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.zeros(2, 0, dtype=torch.float16)),
        ("base", base),
        ("slice", base[2:5]),            # storage offset 2, contiguous
        ("elem", base[4]),               # 0-d view at offset 4
        ("rows", mat[1:3]),              # offset 3, shape (2, 3)
        ("mat", mat),
        ("shared", shared),
        ("tied", shared),                # the same tensor under a second name
        ("unit", torch.randn(4, 1, generator=g).t()),   # (1, 4) stride (1, 1): contiguous
        ("param", torch.nn.Parameter(torch.randn(3, generator=g))),
        ("pos_ids", torch.arange(6).view(1, 6)),         # int64 buffer
        ("i8", torch.arange(-3, 3, dtype=torch.int8)),
        ("u8", torch.arange(5, dtype=torch.uint8)),
        ("i32", torch.arange(3, dtype=torch.int32)),
        ("mask", torch.tensor([True, False, True])),
    ])


def test_torch_save_dtypes_shapes_views_ties(tmp_path):
    sd = _state_dict()
    assert sd["unit"].is_contiguous() and sd["unit"].stride() == (1, 1)
    path, blob = _save(tmp_path, sd)
    infos = parse_bin_bytes(blob, "pytorch_model.bin")
    _check_all(infos, blob, sd)
    assert infos.wrapper is None and infos.file_size == len(blob)
    by = infos.by_name()
    # views point into their base's bytes; tied names share one range
    assert by["slice"].start == by["base"].start + 2 * 4
    assert by["elem"].start == by["base"].start + 4 * 4 and by["elem"].shape == ()
    assert by["rows"].start == by["mat"].start + 3 * 4
    assert (by["tied"].start, by["tied"].end) == (by["shared"].start, by["shared"].end)
    assert by["empty"].nbytes == 0
    # torch keeps storages 64-byte aligned; a storage's first tensor starts there
    assert by["base"].start % 64 == 0 and by["w3d"].start % 64 == 0
    assert read_bin_file(path) == infos


def test_module_state_dict_with_metadata_and_buffers(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(11, 4)
            self.norm = torch.nn.BatchNorm1d(4)
            self.head = torch.nn.Linear(4, 11, bias=False)
            self.head.weight = self.emb.weight          # tied, as in HF models

    torch.manual_seed(0)
    m = Tiny()
    sd = m.state_dict()
    assert hasattr(sd, "_metadata")                      # pickled as BUILD state on the dict
    _, blob = _save(tmp_path, sd)
    infos = parse_bin_bytes(blob, "m.bin")
    _check_all(infos, blob, sd)
    by = infos.by_name()
    assert (by["head.weight"].start, by["head.weight"].end) == (by["emb.weight"].start,
                                                                by["emb.weight"].end)
    nbt = by["norm.num_batches_tracked"]
    assert nbt.dtype == "I64" and nbt.shape == ()


def test_tensor_attrs_and_parameter_state_and_v3_dtype(tmp_path):
    t = torch.randn(3, 2)
    t.note = "hello"                       # -> torch._tensor._rebuild_from_type_v2
    p = torch.nn.Parameter(torch.randn(5).half())
    p.tag = 7                              # -> torch._utils._rebuild_parameter_with_state
    u16 = torch.arange(4, dtype=torch.int32).to(torch.uint16)   # -> _rebuild_tensor_v3
    sd = {"t": t, "p": p, "u16": u16}
    _, blob = _save(tmp_path, sd)
    assert b"_rebuild_from_type_v2" in blob and b"_rebuild_tensor_v3" in blob
    _check_all(parse_bin_bytes(blob, "a.bin"), blob, sd)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_one_level_wrapper(tmp_path, key):
    sd = collections.OrderedDict(a=torch.randn(3), b=torch.randn(2, 2).bfloat16())
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(1, 2)).sum().backward()
    opt.step()                             # optimizer state holds tensors and ints
    obj = {key: sd, "optimizer": opt.state_dict(), "epoch": 3, "note": "x"}
    _, blob = _save(tmp_path, obj)
    infos = parse_bin_bytes(blob, "ckpt.bin")
    assert infos.wrapper == key
    _check_all(infos, blob, sd)


def test_wrapper_preference_and_refusals(tmp_path):
    sd = {"a": torch.randn(2)}
    _, blob = _save(tmp_path, {"ema": {"a": torch.randn(2)}, "state_dict": sd}, "w.bin")
    assert parse_bin_bytes(blob, "w.bin").wrapper == "state_dict"
    cases = [
        ({"ema": sd, "other": {"b": torch.randn(2)}}, "several dicts of tensors at the top "
                                                      "level ('ema', 'other')"),
        ({"a": torch.randn(2), "epoch": 3}, "entry 'epoch' holds int, not a tensor"),
        ([torch.randn(2)], "holds a list, not a dict of tensors"),
        ({"cfg": {"lr": 0.1}}, "no tensors at the top level or one level down"),
    ]
    for obj, msg in cases:
        _, blob = _save(tmp_path, obj, "bad.bin")
        with pytest.raises(ValueError, match="bad.bin") as e:
            parse_bin_bytes(blob, "bad.bin")
        assert msg in str(e.value)


@pytest.mark.parametrize("make, msg", [
    (lambda: torch.randn(3, 4).t(), "tensor 'w' is not contiguous (shape (4, 3), stride (1, 4)"),
    (lambda: torch.randn(4, 6)[:, ::2],
     "tensor 'w' is not contiguous (shape (4, 3), stride (6, 2)"),
    (lambda: torch.randn(3).double(), "tensor 'w' has dtype torch.DoubleStorage; float64 "
                                      "weights are not read: convert with torch and re-save"),
    (lambda: torch.randn(3, dtype=torch.complex64), "tensor 'w' has dtype "
                                                    "torch.ComplexFloatStorage"),
    (lambda: torch.zeros(3).to(torch.float8_e4m3fn), "tensor 'w' has dtype "
                                                     "torch.float8_e4m3fn"),
    (lambda: torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8),
     "quantized tensors are not supported: dequantize() them and re-save"),
])
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_refused_tensors_name_file_and_tensor(tmp_path, make, msg):
    _, blob = _save(tmp_path, {"ok": torch.randn(2), "w": make()})
    with pytest.raises(ValueError) as e:
        parse_bin_bytes(blob, "dir/pytorch_model.bin")
    assert str(e.value).startswith("dir/pytorch_model.bin: ")
    assert msg in str(e.value)
    assert "safetensors" in str(e.value)          # says what to do


def test_legacy_and_foreign_formats_refused(tmp_path):
    _, blob = _save(tmp_path, {"a": torch.randn(2)}, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"^old.bin: the legacy \(non-ZIP\) torch.save format.*"
                                         r"re-save it"):
        parse_bin_bytes(blob, "old.bin")
    from safetensors.torch import save
    with pytest.raises(ValueError, match="x.bin: a safetensors file"):
        parse_bin_bytes(save({"a": torch.randn(2)}), "x.bin")
    with pytest.raises(ValueError, match="x.bin: an MBJS file"):
        parse_bin_bytes(b"SJBM" + bytes(60), "x.bin")
    with pytest.raises(ValueError, match="x.bin: a bare pickle"):
        parse_bin_bytes(pickle.dumps({"a": 1}, protocol=2) + bytes(40), "x.bin")
    with pytest.raises(ValueError, match="x.bin: 5 bytes is too short"):
        parse_bin_bytes(b"PK\3\4\0", "x.bin")
    _, good = _save(tmp_path, {"a": torch.randn(2)})
    with pytest.raises(ValueError, match="x.bin: no ZIP end-of-central-directory record: the "
                                         "file is truncated"):
        parse_bin_bytes(good[:-30], "x.bin")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_refused(tmp_path):
    path = tmp_path / "ts.bin"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(ValueError, match=r"ts.bin: a TorchScript archive \(torch.jit.save\)"):
        read_bin_file(path)


def test_recompressed_archive_refused(tmp_path):
    _, blob = _save(tmp_path, {"a": torch.randn(2)})
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
    with pytest.raises(ValueError, match=r"z.bin: ZIP entry 'pytorch_model/data.pkl' is "
                                         r"compressed \(deflate\).*re-save"):
        parse_bin_bytes(out.getvalue(), "z.bin")


# --- hand-built archives ---------------------------------------------------------------

def _zip(entries, zip64=False, comment=b"", align=64):
    """A stored ZIP the way torch lays it out: data aligned via a padding extra field;
    with zip64, every size/offset goes through ZIP64 extras and the ZIP64 end records."""
    out, central = bytearray(), []
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data)
        off = len(out)
        z64 = struct.pack("<HHQQ", 1, 16, len(data), len(data)) if zip64 else b""
        pad = (-(off + 30 + len(nb) + len(z64) + 4)) % align
        extra = z64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        size32 = 0xFFFFFFFF if zip64 else len(data)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\3\4", 45, 0x800, 0, 0, 0, crc, size32, size32,
                           len(nb), len(extra)) + nb + extra + data
        central.append((nb, crc, len(data), off))
    cd_off = len(out)
    for nb, crc, n, off in central:
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, n, n, off)
            n32 = off32 = 0xFFFFFFFF
        else:
            extra, n32, off32 = b"", n, off
        out += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\1\2", 45, 45, 0x800, 0, 0, 0, crc, n32,
                           n32, len(nb), len(extra), 0, 0, 0, 0, off32) + nb + extra
    cd_size = len(out) - cd_off
    count = len(central)
    if zip64:
        z_off = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\6\6", 44, 45, 45, 0, 0, count, count, cd_size,
                           cd_off)
        out += struct.pack("<4sIQI", b"PK\6\7", 0, z_off, 1)
        count, cd_size, cd_off = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    out += struct.pack("<4sHHHHIIH", b"PK\5\6", 0, 0, count, count, cd_size, cd_off,
                       len(comment)) + comment
    return bytes(out)


def _rezip(blob, **kw):
    src = zipfile.ZipFile(io.BytesIO(blob))
    return _zip([(n, src.read(n)) for n in src.namelist()], **kw)


def test_zip64_archive(tmp_path):
    sd = _state_dict()
    _, blob = _save(tmp_path, sd)
    z64 = _rezip(blob, zip64=True)
    assert b"PK\6\6" in z64 and b"PK\6\7" in z64
    path = tmp_path / "z64.bin"
    path.write_bytes(z64)
    loaded = torch.load(path, weights_only=True)      # the hand-built ZIP64 file is valid
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    infos = parse_bin_bytes(z64, "z64.bin")
    _check_all(infos, z64, sd)
    # and with an archive comment after the end record (the EOCD search must skip it)
    z = _rezip(blob, zip64=True, comment=b"PK\5\6 a comment that looks like a record")
    _check_all(parse_bin_bytes(z, "c.bin"), z, sd)
    z = _rezip(blob, comment=b"x" * 300)
    _check_all(parse_bin_bytes(z, "c.bin"), z, sd)


def _p(x):
    return pickle.dumps(x, protocol=2)[2:-1]


def _g(module, name):
    return f"c{module}\n{name}\n".encode()


def _tensor(storage, key, numel, offset, size, stride):
    pid = b"(" + _p("storage") + _g("torch", storage) + _p(key) + _p("cpu") + _p(numel) + b"tQ"
    return (_g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _p(offset) + _p(tuple(size))
            + _p(tuple(stride)) + b"\x89" + _g("collections", "OrderedDict") + b")RtR")


def _state(items):
    return (b"\x80\x02" + _g("collections", "OrderedDict") + b")R("
            + b"".join(_p(k) + v for k, v in items) + b"u.")


def _archive(pkl, storages, byteorder=b"little"):
    entries = [("archive/data.pkl", pkl), ("archive/byteorder", byteorder)]
    entries += [(f"archive/data/{k}", v) for k, v in storages.items()]
    return _zip(entries + [("archive/version", b"3\n")])


F6 = struct.pack("<6f", *range(6))


def test_hand_built_archive_is_what_torch_reads(tmp_path):
    pkl = _state([("x", _tensor("FloatStorage", "0", 6, 1, (2, 2), (2, 1)))])
    blob = _archive(pkl, {"0": F6})
    path = tmp_path / "h.bin"
    path.write_bytes(blob)
    x = torch.load(path, weights_only=True)["x"]
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (info,) = parse_bin_bytes(blob, "h.bin")
    assert (info.name, info.dtype, info.shape) == ("x", "F32", (2, 2))
    assert blob[info.start:info.end] == _raw(x)


@pytest.mark.parametrize("pkl, storages, byteorder, msg", [
    (_state([("x", _tensor("FloatStorage", "0", 6, 3, (2, 2), (2, 1)))]), {"0": F6}, b"little",
     "tensor 'x': elements [3, 7) do not fit its storage '0' of 6 elements"),
    (_state([("x", _tensor("FloatStorage", "0", 8, 0, (8,), (1,)))]), {"0": F6}, b"little",
     "tensor 'x': bytes [0, 32) of storage '0' run past its 24-byte data record"),
    (_state([("x", _tensor("FloatStorage", "7", 6, 0, (6,), (1,)))]), {"0": F6}, b"little",
     "tensor 'x': storage '7' has no data record archive/data/7"),
    (_state([("x", _tensor("FloatStorage", "0", 6, 0, (2, 3), (1, 2)))]), {"0": F6}, b"little",
     "tensor 'x' is not contiguous (shape (2, 3), stride (1, 2)"),
    (_state([("x", _tensor("FloatStorage", "0", 6, 0, (6,), (1,)))]), {"0": F6}, b"big",
     "byteorder is b'big', not 'little'"),
    (_state([("x", _tensor("FloatStorage", "0", 6, 0, (6,), (1,)) + _p({"offset": 0}) + b"b")]),
     {"0": F6}, b"little", "BUILD on a tensor is not allowed"),
    (b"\x80\x02" + _g("collections", "OrderedDict") + b")R(" + _p("x") + b"(" + _p("blob")
     + _p("0") + b"tQu.", {"0": F6}, b"little", "unexpected persistent id ('blob', '0')"),
    (_state([("x", _g("torch._utils", "_rebuild_tensor_v2") + b"(" + _p("not a storage")
                   + _p(0) + _p((6,)) + _p((1,)) + b"\x89" + _p(None) + b"tR")]),
     {"0": F6}, b"little", "tensor 'x': its storage is not a checkpoint storage"),
])
def test_corrupt_archives_refused(pkl, storages, byteorder, msg):
    with pytest.raises(ValueError) as e:
        parse_bin_bytes(_archive(pkl, storages, byteorder), "c.bin")
    assert str(e.value).startswith("c.bin: ")
    assert msg in str(e.value)


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


@pytest.mark.parametrize("payload, glob", [
    (lambda m: _Evil(os.system, f"touch {m}"), "global posix.system"),
    (lambda m: _Evil(exec, f"open({str(m)!r}, 'w').close()"), "global __builtin__.exec"),
    (lambda m: _Evil(eval, f"open({str(m)!r}, 'w')"), "global __builtin__.eval"),
    (lambda m: {"w": _Evil(os.system, f"touch {m}")}, "global posix.system"),
])
def test_malicious_pickle_refused_without_running(tmp_path, payload, glob):
    marker = tmp_path / "pwned"
    pkl = pickle.dumps(payload(marker), protocol=2)
    with pytest.raises(ValueError) as e:
        parse_bin_bytes(_archive(pkl, {}), "evil.bin")
    assert not marker.exists()
    assert str(e.value).startswith("evil.bin: data.pkl references the ")
    assert glob in str(e.value) and "could run arbitrary code" in str(e.value)
    # sanity: the same pickle really does run its payload when unpickled normally
    pickle.loads(pkl)
    assert marker.exists()


def test_numpy_in_state_dict_refused(tmp_path):
    import numpy as np
    _, blob = _save(tmp_path, {"a": torch.randn(2), "n": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"n.bin: data.pkl references the global "
                                         r"numpy\..*numpy arrays are not supported"):
        parse_bin_bytes(blob, "n.bin")


# --- the byte-source path --------------------------------------------------------------

class _CountingSource(LocalSource):
    def __init__(self, folder):
        super().__init__(folder)
        self.reads = []

    async def read(self, name, start=None, end=None):
        assert start is not None, "the whole file must never be read"
        self.reads.append((start, end))
        return await super().read(name, start, end)


def test_read_bin_header_reads_only_small_ranges(tmp_path):
    sd = collections.OrderedDict(big=torch.randn(512, 1024))   # 2 MiB that must not be read
    sd.update(_state_dict())
    for i in range(40):
        sd[f"layer.{i}.w"] = torch.randn(32, 32)         # many storages: batched local headers
    path, blob = _save(tmp_path, sd)
    src = _CountingSource(tmp_path)
    infos = _run(read_bin_header(src, path.name))
    assert infos == parse_bin_bytes(blob, path.name)
    assert infos.wrapper is None
    _check_all(infos, blob, sd)
    total = sum(b - a for a, b in src.reads)
    assert total < 300_000 < len(blob) // 7, (total, len(blob))
    assert len(src.reads) <= 8, src.reads                # coalesced, not one read per header
    big = infos.by_name()["big"]
    assert not any(a < big.end and big.start < b for a, b in src.reads)
    # errors name the source's full path
    _save(tmp_path, {"w": torch.randn(3, 4).t()}, "t.bin")
    with pytest.raises(ValueError, match=f"^{tmp_path / 't.bin'}: tensor 'w' is not contiguous"):
        _run(read_bin_header(LocalSource(tmp_path), "t.bin"))


# --- inside Pyodide (the engine's runtime: CPython 3.14 on WebAssembly, C _pickle) -------

PYODIDE_CODE = r'''
import base64, os, sys
for path, text in SOURCES.items():
    os.makedirs(os.path.dirname("/work/" + path), exist_ok=True)
    with open("/work/" + path, "w") as f:
        f.write(text)
from py_engine.io.torch_bin import parse_bin_bytes, read_bin_header

class MemSource:
    def __init__(self, blob):
        self.blob = blob
    async def size(self, name):
        return len(self.blob)
    async def read(self, name, start=None, end=None):
        return self.blob[start:end]

blob = base64.b64decode(GOOD)
direct = parse_bin_bytes(blob, "good.bin")
viasrc = await read_bin_header(MemSource(blob), "good.bin")
errors = []
for b64 in BAD:
    try:
        parse_bin_bytes(base64.b64decode(b64), "bad.bin")
        errors.append(None)
    except ValueError as e:
        errors.append(str(e))
result = {"python": sys.version.split()[0], "same": direct == viasrc,
          "infos": [[i.name, i.dtype, list(i.shape), i.start, i.end] for i in viasrc],
          "errors": errors, "pwned": os.path.exists("/tmp/pwned")}
'''


def test_inside_pyodide(tmp_path):
    import base64
    from tools.bench_tokenizer import ROOT, pyodide_available, run_pyodide
    if not pyodide_available():
        pytest.skip("needs node and node_modules/pyodide (npm ci)")
    sd = _state_dict()
    _, blob = _save(tmp_path, sd)
    z64 = _rezip(blob, zip64=True)
    sources = {}
    for rel in ("py_engine/io/__init__.py", "py_engine/io/safetensors_format.py",
                "py_engine/io/torch_bin.py"):
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            sources[rel] = f.read()
    bad = [_archive(pickle.dumps(_Evil(os.system, "touch /tmp/pwned"), protocol=2), {}),
           _save(tmp_path, {"w": torch.randn(3, 4).t()}, "t.bin")[1]]
    out = run_pyodide(PYODIDE_CODE, {
        "SOURCES": sources, "GOOD": base64.b64encode(z64).decode(),
        "BAD": [base64.b64encode(b).decode() for b in bad]}, timeout=300)
    assert out["python"].startswith("3.") and out["same"] is True
    host = parse_bin_bytes(z64, "good.bin")
    assert out["infos"] == [[i.name, i.dtype, list(i.shape), i.start, i.end] for i in host]
    assert out["pwned"] is False
    assert out["errors"][0].startswith("bad.bin: data.pkl references the global posix.system")
    assert out["errors"][1].startswith("bad.bin: tensor 'w' is not contiguous")
