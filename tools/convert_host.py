"""Host-side checkpoint conversion: a numpy EXECUTOR of py_engine.io.convert_plan's plans.

Every decision (which tensors, their order and names, dtypes, the MBJS conv tap flip, shard
layout, config.json, refusals and their messages) is made by convert_plan, the same code the
convert page runs in the tab; this module gives it the files (HostIO: ranged reads, CRC-32,
max |x|) and writes what the plan says, op by op, streaming in chunks of at most CHUNK input
bytes (whole rows for conv-tap flips), so peak memory is about one chunk, not the model.

Dtype rounding is round-to-nearest-even, bit-identical to torch 2.13 (CPU) `.to(torch.float16)`
and `.to(torch.bfloat16)`, NaN bit patterns included (tests/unit/test_convert.py checks ties,
subnormals, overflow, inf, NaN payloads and 200k random bit patterns), and to worker.mjs's
executor (tests/e2e/test_convert_page.py).
"""
import asyncio
import base64
import itertools
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from py_engine.io import convert_plan, hf_names, mbjs
from py_engine.io.safetensors_format import DTYPE_SIZES, build_header, safetensors_order

ST_DTYPE = convert_plan.ST_DTYPE           # CLI dtype name -> safetensors dtype
CHUNK = 16 << 20                           # input bytes per step, as worker.mjs's CV_CHUNK
_IDS = itertools.count()


# --- dtype conversion ------------------------------------------------------------

def f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round-to-nearest-even.

    NaN bits are not standardised across torch backends; torch 2.13 on CPU writes 0xFFFF
    for every NaN (c10's scalar path would give 0x7FC0), and we match the CPU result.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0xFFFF), rounded)


def f32_to_f16_bits(x):
    """float32 array -> uint16 f16 bits, RNE (numpy's cast), overflow to inf.

    NaN: torch (x86 F16C) keeps the sign and the top 10 payload bits and sets the quiet bit;
    numpy would keep a signalling NaN signalling, so NaNs are built by hand.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    u = x.view(np.uint32)
    nan = (((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)).astype(np.uint16)
    return np.where(np.isnan(x), nan, h)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_f32(raw, st_dtype):
    """Raw little-endian tensor bytes as stored -> float32 array (exact widening)."""
    if st_dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if st_dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if st_dtype == "BF16":
        return bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    raise ValueError(f"cannot widen {st_dtype} to float32 (int8 needs its scales)")


def from_f32(x, st_dtype):
    """float32 array -> little-endian bytes in st_dtype."""
    x = np.asarray(x, dtype=np.float32)
    if st_dtype == "F32":
        return x.astype("<f4").tobytes()
    if st_dtype == "F16":
        return f32_to_f16_bits(x).astype("<u2").tobytes()
    if st_dtype == "BF16":
        return f32_to_bf16_bits(x).astype("<u2").tobytes()
    raise ValueError(f"cannot write {st_dtype}")


# --- the planner's io, and running it ----------------------------------------------------

class HostIO:
    """convert_plan's io over local files and in-memory tensors (write_hf / write_mbjs).

    A tensor file is produced on first read and kept until another one is read: the plans
    read each tensor whole, in order, so memory holds one tensor at a time."""

    def __init__(self):
        self.paths, self.makers, self._last = {}, {}, (None, b"")

    def add_file(self, path, shown):
        fid = f"host{next(_IDS)}"         # never reused: convert_plan caches CRCs by id
        self.paths[fid] = Path(path)
        return {"id": fid, "path": shown, "size": Path(path).stat().st_size}

    def add_tensor(self, name, make):
        """make() -> float32 bytes of tensor `name`; returns its file id."""
        fid = f"host{next(_IDS)}:{name}"
        self.makers[fid] = make
        return fid

    def read_now(self, fid, start, end):
        if fid in self.makers:
            if self._last[0] != fid:
                self._last = (fid, self.makers[fid]())
            return self._last[1][start:end]
        with open(self.paths[fid], "rb") as f:
            f.seek(start)
            return f.read(end - start)

    async def read(self, fid, start, end):
        return self.read_now(fid, start, end)

    async def crc32(self, fid, start, end):
        crc = 0
        for a in range(start, end, CHUNK):
            crc = zlib.crc32(self.read_now(fid, a, min(end, a + CHUNK)), crc)
        return crc

    async def max_abs(self, fid, ranges, dtype):
        out = []
        for a, b in ranges:
            x = to_f32(self.read_now(fid, a, b), dtype)
            out.append(float(np.max(np.abs(x))) if x.size else 0.0)   # NaN stays NaN: nonzero
        return out


def sync(coro):
    """Run a planner coroutine to its end. Host reads never wait, but torch_bin gathers its
    reads (asyncio) and the caller's thread may own a running loop (Playwright's sync API),
    so it runs on a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def folder_entries(io, folder):
    """The files directly in `folder`, as the page would list a dropped folder."""
    folder = Path(folder).resolve()
    parts = folder.parts
    cache = [i for i, p in enumerate(parts) if p.startswith("models--")]  # HF cache snapshot
    shown = "/".join(parts[cache[-1]:]) if cache else folder.name.lstrip(".") or "model"
    return [io.add_file(p, f"{shown}/{p.name}") for p in sorted(folder.iterdir()) if p.is_file()]


# --- the executor --------------------------------------------------------------------

def op_chunks(op, io):
    """The bytes one plan op writes, in pieces of at most CHUNK input bytes."""
    kind = op["op"]
    if kind == "bytes":
        yield base64.b64decode(op["b64"])
    elif kind == "copy":
        for a in range(op["start"], op["end"], CHUNK):
            yield io.read_now(op["src"], a, min(op["end"], a + CHUNK))
    elif kind in ("cast", "flip"):
        width = DTYPE_SIZES[op["from"]]
        row = op["cols"] * width if kind == "flip" else width
        step = max(row, CHUNK // row * row)
        for a in range(op["start"], op["end"], step):
            x = to_f32(io.read_now(op["src"], a, min(op["end"], a + step)), op["from"])
            if kind == "flip":
                x = np.ascontiguousarray(x.reshape(-1, op["cols"])[:, ::-1])
            yield from_f32(x, op["to"])
    elif kind == "zeros":
        for left in range(op["n"], 0, -CHUNK):
            yield bytes(min(left, CHUNK))
    else:
        raise ValueError(f"convert: unknown plan op {kind}")


def execute(plan, io, dst, single_file=False):
    """Write a plan's outputs: into folder `dst`, or (single_file) as the file `dst`.

    All or nothing: every output is written as `<name>.partial` next to where it goes and
    renamed into place only when all of them are complete, so a failure (a short read, a full
    disk, Ctrl-C) leaves no half-written model behind -- and no folder this call created."""
    dst = Path(dst)
    folder = dst.parent if single_file else dst
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    finals = [dst if single_file else dst / out["name"] for out in plan["outputs"]]
    partials = [f.with_name(f.name + ".partial") for f in finals]
    try:
        for out, path in zip(plan["outputs"], partials):
            _write_output(out, io, path)
    except BaseException:
        for path in partials:
            path.unlink(missing_ok=True)
        for d in created:              # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if not single_file:
        for stale in list(dst.glob("model*.safetensors")) + [dst / "model.safetensors.index.json"]:
            if stale.exists() and stale not in finals:
                stale.unlink()
    for partial, final in zip(partials, finals):
        partial.replace(final)
    return [o["name"] for o in plan["outputs"]]


def _write_output(out, io, path):
    crc, size = 0, 0
    with open(path, "wb") as f:
        for op in out["ops"]:
            pieces = ([mbjs.build_trailer(crc)] if op["op"] == "crc_trailer"
                      else op_chunks(op, io))
            for data in pieces:
                f.write(data)
                crc, size = zlib.crc32(data, crc), size + len(data)
    if size != out["size"]:
        raise ValueError(f"{path.with_suffix('')}: wrote {size} bytes, the plan says "
                         f"{out['size']} (a source file changed or was cut short while reading)")


# --- the conversions -------------------------------------------------------------------

def is_mbjs(path):
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == mbjs.MAGIC_BYTES


def convert(src, dst, dtype=None, shards=None, max_shard_bytes=None, drop_untied_head=False,
            mbjs_version=None, hints=None, log=print, expect=None):
    """SRC (HF or mamba_ssm folder, or MBJS file) -> DST (HF folder, or MBJS file when it ends
    in .bin), as convert_plan plans it. Returns the config written.
    expect: (arch, pattern) the source must be (py_engine/app/arch.mismatch), else nothing
    is written and ValueError says both."""
    src, dst = Path(src), Path(dst)
    io = HostIO()
    if src.is_file():
        entries = [io.add_file(src, src.name)]
    elif src.is_dir():
        entries = folder_entries(io, src)
    else:
        raise ValueError(f"{src}: neither an HF model folder nor an MBJS file")
    target = "mbjs" if dst.suffix == ".bin" else "hf"
    if target == "hf" and src.is_dir() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: destination is the source folder")
    source = sync(convert_plan.inspect(entries, io, hints))
    if expect and any(expect):
        from py_engine.app.arch import mismatch
        problem = mismatch(source.cfg, *expect, source=str(src))
        if problem:
            raise ValueError(problem)
    options = {"drop_untied_head": drop_untied_head, "mbjs_version": mbjs_version,
               "shards": shards, "max_shard_bytes": max_shard_bytes}
    plan = sync(convert_plan.plan(source, target, dtype, options, io))
    files = execute(plan, io, dst, single_file=target == "mbjs")
    log(f"converted {src}: {plan['summary']}")
    for n in plan["notes"] + [f"wrote {dst}" + ("" if target == "mbjs" else
                                                  ": " + ", ".join(files))]:
        log("  " + n)
    return source.cfg


def _tensor_source(io, cfg, get, names):
    """convert_plan's view of in-memory tensors: get(name) -> float32 array, read lazily."""
    want = hf_names.expected_tensors(cfg)

    def maker(name):
        def make():
            a = np.asarray(get(name), np.float32)
            if tuple(a.shape) != want[name]:
                raise ValueError(f"tensor {name}: shape {list(a.shape)} != {list(want[name])}")
            return from_f32(a, "F32")
        return make
    return convert_plan.tensor_source(
        cfg, {n: (io.add_tensor(n, maker(n)), want[n]) for n in names})


def write_hf(dst, cfg, tensors, st_dtype="F32", shards=None, max_shard_bytes=None):
    """Write config.json + safetensors (single file, or shards + index).

    tensors: {hf name: float32 array or zero-arg callable returning one}, covering exactly
    hf_names.expected_tensors(cfg). Returns the list of files written.
    """
    want = hf_names.expected_tensors(cfg)
    missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or extra:
        raise ValueError(f"{dst}: tensors to write do not match the config: missing "
                         f"{missing}, unexpected {extra}")
    io = HostIO()
    get = lambda n: tensors[n]() if callable(tensors[n]) else tensors[n]    # noqa: E731
    source = _tensor_source(io, cfg, get, want)
    dtype = {v: k for k, v in ST_DTYPE.items()}[st_dtype]
    plan = sync(convert_plan.plan(source, "hf", dtype, {"shards": shards,
                                                        "max_shard_bytes": max_shard_bytes}))
    return execute(plan, io, dst)


def write_mbjs(dst, cfg, get, dtype="f32", version=None):
    """Write an MBJS file from HF-named float32 tensors, get(hf name) -> array (an untied
    head is left out: MBJS ties it). Returns the file size."""
    io = HostIO()
    names = [part for e in hf_names.mbjs_plan(cfg) if e[3] is not None
             for part, _, _, _ in hf_names.mbjs_parts(e)]
    source = _tensor_source(io, cfg, get, names)
    plan = sync(convert_plan.plan(source, "mbjs", dtype, {"mbjs_version": version,
                                                          "drop_untied_head": True}))
    execute(plan, io, dst, single_file=True)
    return plan["total"]


def write_safetensors(path, items, metadata=None):
    """items: [(name, st_dtype, shape, producer)] where producer() -> raw bytes."""
    entries = safetensors_order([(n, dt, shp) for n, dt, shp, _ in items])
    head, infos = build_header(entries, metadata or {"format": "pt"}, str(path))
    produce = {n: p for n, _, _, p in items}
    with open(path, "wb") as f:
        f.write(head)
        for info in infos:
            data = produce[info.name]()
            if len(data) != info.nbytes:
                raise ValueError(f"{path}: tensor {info.name} produced {len(data)} bytes, "
                                 f"header says {info.nbytes}")
            f.write(data)
    return sum(i.nbytes for i in infos)


class MbjsSource:
    """An MBJS file as convert_plan reads it: .layout, .cfg, .plan (hf_names.mbjs_plan);
    hf_tensors() yields every tensor in HF's layout."""

    def __init__(self, path, hints=None):
        self.path = Path(path)
        self._io = HostIO()
        src = sync(convert_plan.inspect([self._io.add_file(self.path, self.path.name)],
                                        self._io, hints))
        if src.kind != "mbjs":
            raise ValueError(f"{path}: not an MBJS file")
        self._src, self.layout, self.cfg, self.plan = src, src.layout, src.cfg, src.plan

    def hf_tensors(self):
        """(hf name, hf shape or None, transform, float32 array) per MBJS parameter; biases
        HF lacks (hf shape None) come too, MBJS-shaped."""
        for (mname, mshape, hname, hshape, how), op in convert_plan.mbjs_tensor_ops(self._src,
                                                                                    "F32"):
            a = to_f32(b"".join(op_chunks(op, self._io)), "F32")
            yield hname, hshape, how, a.reshape(hshape or mshape)


def parse_size(text):
    """'5GB', '500MB', '1024' -> bytes (decimal units, as transformers' max_shard_size)."""
    t = str(text).strip().upper()
    for unit, mult in (("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                       ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(unit):
            return int(float(t[:-len(unit)]) * mult)
    return int(t)
