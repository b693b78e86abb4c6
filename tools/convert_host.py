"""Host-side checkpoint conversion: HF folder <-> MBJS file, HF -> HF (dtype, shards).

Headers are parsed and written by the pure-stdlib py_engine.io modules (the same code the
browser runs); numpy only moves the tensor bytes. Tensors stream one at a time, so peak
memory is about one tensor, not the model.

Dtype rounding is round-to-nearest-even, bit-identical to torch 2.13 (CPU) `.to(torch.float16)`
and `.to(torch.bfloat16)`, NaN bit patterns included (tests/unit/test_convert.py checks ties,
subnormals, overflow, inf, NaN payloads and 200k random bit patterns).
"""
import json
import shutil
from pathlib import Path

import numpy as np

from py_engine.io import hf_names, mbjs
from py_engine.io.hf_loader import RENAMES
from py_engine.io.torch_bin import read_bin_file
from py_engine.io.safetensors_format import (DTYPE_SIZES, build_header, build_index,
                                             parse_index, read_header, safetensors_order)
from py_engine.models.config import MambaConfig

# CLI dtype name -> safetensors dtype, and -> the name config.json's "dtype" uses.
ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# Small files that travel with a model when converting HF -> HF.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.json", "merges.txt", "generation_config.json", "README.md")


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


# --- reading -----------------------------------------------------------------------

class HFSource:
    """An HF folder: config + where each tensor's bytes are. get(name) -> float32 array."""

    def __init__(self, folder):
        self.folder = Path(folder)
        cfg_path = self.folder / "config.json"
        if not cfg_path.is_file():
            raise ValueError(f"{self.folder}: no config.json (not an HF model folder)")
        self.cfg = MambaConfig.from_hf_dict(json.loads(cfg_path.read_text()), str(cfg_path))
        index = self.folder / "model.safetensors.index.json"
        bin_index = self.folder / "pytorch_model.bin.index.json"
        if index.is_file():
            shard_of = parse_index(index.read_text(), str(index))
            self.files = sorted(set(shard_of.values()))
        elif (self.folder / "model.safetensors").is_file():
            self.files = ["model.safetensors"]
        elif bin_index.is_file():        # PyTorch shards, read without torch
            index = bin_index
            self.files = sorted(set(parse_index(index.read_text(), str(index)).values()))
        elif (self.folder / "pytorch_model.bin").is_file():
            self.files = ["pytorch_model.bin"]
        else:
            found = sorted(p.name for p in self.folder.glob("*.safetensors"))
            if len(found) != 1:
                raise ValueError(f"{self.folder}: expected model.safetensors, "
                                 "model.safetensors.index.json or pytorch_model.bin, found "
                                 f"{found or 'neither'}")
            self.files = found
        self.infos = {}
        for fname in self.files:
            path = self.folder / fname
            if not path.is_file():
                raise ValueError(f"{index}: shard {fname} is missing")
            tensors = (read_bin_file(path) if fname.endswith(".bin")
                       else read_header(path).tensors)
            for t in tensors:
                name = RENAMES.get(t.name, t.name)     # mamba_ssm's backbone.embedding
                if fname.endswith(".bin") and t.dtype not in TORCH_NAME and name not in \
                        hf_names.expected_tensors(self.cfg):
                    continue                             # a torch state dict's int buffers
                if name in self.infos:
                    raise ValueError(f"{path}: tensor {name} also appears in "
                                     f"{self.infos[name][0].name}")
                self.infos[name] = (path, t)
        where = str(self.folder / self.files[0]) if len(self.files) == 1 else str(index)
        hf_names.check_tensors(self.cfg, {n: t.shape for n, (_, t) in self.infos.items()},
                               where)
        self.dtypes = sorted({t.dtype for _, t in self.infos.values()})

    def raw(self, name):
        path, t = self.infos[name]
        with open(path, "rb") as f:
            f.seek(t.start)
            data = f.read(t.nbytes)
        if len(data) != t.nbytes:
            raise ValueError(f"{path}: tensor {name} truncated")
        return data, t

    def get(self, name):
        data, t = self.raw(name)
        return to_f32(data, t.dtype).reshape(t.shape)


class MbjsSource:
    """An MBJS file: config inferred from its numel list, get(hf name) -> float32 array."""

    def __init__(self, path, hints=None):
        self.path = Path(path)
        self.layout = mbjs.read_layout(self.path)
        self.cfg = mbjs.infer_config(self.layout, hints)
        self.plan = hf_names.mbjs_plan(self.cfg)
        self.by_mbjs = {}
        for idx, (mname, mshape, hname, hshape, how) in enumerate(self.plan):
            self.by_mbjs[mname] = (idx, mshape, hname, hshape, how)

    def mbjs_array(self, idx):
        n = self.layout.numels[idx]
        width = mbjs.DTYPE_BYTES[self.layout.dtype]
        with open(self.path, "rb") as f:
            f.seek(self.layout.offsets[idx])
            data = f.read(n * width)
        return to_f32(data, "F32" if self.layout.dtype == "f32" else "F16")

    def hf_tensors(self):
        """{hf name: float32 array} generator, HF-shaped; biases absent in HF yield too."""
        for idx, (mname, mshape, hname, hshape, how) in enumerate(self.plan):
            a = self.mbjs_array(idx).reshape(mshape)
            if how == "flip":
                a = a[:, ::-1].reshape(mshape[0], 1, mshape[1])
            yield hname, hshape, how, np.ascontiguousarray(a)


# --- writing -----------------------------------------------------------------------

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


def plan_shards(sizes, shards=None, max_shard_bytes=None):
    """Split an ordered [(name, nbytes)] into contiguous shards: a fixed count, or a size cap."""
    total = sum(b for _, b in sizes)
    if shards:
        target = total / shards
        out, cur, acc = [], [], 0
        for name, b in sizes:
            if cur and acc + b / 2 > target * (len(out) + 1) and len(out) < shards - 1:
                out.append(cur)
                cur = []
            cur.append(name)
            acc += b
        out.append(cur)
        if len(out) != shards:
            raise ValueError(f"cannot split {len(sizes)} tensors into {shards} shards")
        return out
    out, cur, acc = [], [], 0
    for name, b in sizes:
        if cur and acc + b > max_shard_bytes:
            out.append(cur)
            cur, acc = [], 0
        cur.append(name)
        acc += b
    out.append(cur)
    return out


def write_hf(dst, cfg, tensors, st_dtype="F32", shards=None, max_shard_bytes=None):
    """Write config.json + safetensors (single file, or shards + index).

    tensors: {hf name: float32 array or zero-arg callable returning one}, covering exactly
    hf_names.expected_tensors(cfg). Returns the list of files written.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    want = hf_names.expected_tensors(cfg)
    missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or extra:
        raise ValueError(f"{dst}: tensors to write do not match the config: missing "
                         f"{missing}, unexpected {extra}")
    itemsize = DTYPE_SIZES[st_dtype]

    def producer(name):
        def make():
            v = tensors[name]
            a = v() if callable(v) else v
            if tuple(a.shape) != want[name]:
                raise ValueError(f"tensor {name}: shape {list(a.shape)} != {list(want[name])}")
            return from_f32(a, st_dtype)
        return make

    sizes = [(n, _numel(s) * itemsize) for n, s in want.items()]
    groups = ([list(want)] if not shards and not max_shard_bytes
              else plan_shards(sizes, shards, max_shard_bytes))
    for stale in list(dst.glob("model*.safetensors")) + [dst / "model.safetensors.index.json"]:
        if stale.exists():
            stale.unlink()
    written = []
    if len(groups) == 1 and not shards:
        write_safetensors(dst / "model.safetensors",
                          [(n, st_dtype, want[n], producer(n)) for n in groups[0]])
        written.append("model.safetensors")
    else:
        weight_map = {}
        for k, group in enumerate(groups, 1):
            fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
            write_safetensors(dst / fname,
                              [(n, st_dtype, want[n], producer(n)) for n in group])
            weight_map.update({n: fname for n in group})
            written.append(fname)
        total = sum(b for _, b in sizes)
        (dst / "model.safetensors.index.json").write_text(build_index(weight_map, total))
        written.append("model.safetensors.index.json")
    conf = cfg.to_hf_dict()
    conf.pop("torch_dtype", None)
    conf["dtype"] = TORCH_NAME[st_dtype]
    (dst / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    written.append("config.json")
    return written


def write_mbjs(dst, cfg, get, dtype="f32", version=None):
    """Write an MBJS file from HF-named float32 tensors: get(hf name) -> array.

    Absent HF biases become zeros; conv taps are reversed into MBJS's order; a CRC trailer
    is appended, as npm's exportWeights does. Returns the file size.
    """
    version = version or (3 if dtype == "f16" else 2)
    if mbjs.VERSION_DTYPE[version] != dtype:
        raise ValueError(f"MBJS v{version} stores {mbjs.VERSION_DTYPE[version]}, not {dtype}")
    plan = hf_names.mbjs_plan(cfg)
    numels = [_numel(mshape) for _, mshape, _, _, _ in plan]
    head = mbjs.build_header(numels, cfg.layers, version)
    crc = mbjs.crc32(head)
    size = len(head)
    with open(dst, "wb") as f:
        f.write(head)
        for mname, mshape, hname, hshape, how in plan:
            if hshape is None:
                a = np.zeros(mshape, np.float32)
            else:
                a = np.asarray(get(hname), np.float32)
                if how == "flip":
                    a = a.reshape(mshape)[:, ::-1]
            data = from_f32(np.ascontiguousarray(a).reshape(mshape),
                            "F32" if dtype == "f32" else "F16")
            f.write(data)
            crc = mbjs.crc32(data, crc)
            size += len(data)
        f.write(mbjs.build_trailer(crc))
    return size + mbjs.TRAILER_BYTES


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# --- the conversions -------------------------------------------------------------------

def is_mbjs(path):
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == mbjs.MAGIC_BYTES


def convert(src, dst, dtype=None, shards=None, max_shard_bytes=None, drop_untied_head=False,
            mbjs_version=None, hints=None, log=print):
    """SRC (HF folder or MBJS file) -> DST (HF folder, or MBJS file when it ends in .bin)."""
    src, dst = Path(src), Path(dst)
    dst_mbjs = dst.suffix == ".bin"
    if is_mbjs(src):
        if dst_mbjs:
            raise ValueError("MBJS -> MBJS is not a conversion; copy the file")
        return _mbjs_to_hf(src, dst, dtype, shards, max_shard_bytes, hints, log)
    if not src.is_dir():
        raise ValueError(f"{src}: neither an HF model folder nor an MBJS file")
    source = HFSource(src)
    if dst_mbjs:
        if shards or max_shard_bytes:
            raise ValueError("MBJS is a single file; --shards/--max-shard-size apply to HF output")
        return _hf_to_mbjs(source, dst, dtype or "f32", drop_untied_head, mbjs_version, log)
    return _hf_to_hf(source, dst, dtype, shards, max_shard_bytes, log)


def _describe(cfg):
    return (f"{cfg.model_type}, {cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}, "
            f"vocab {cfg.vocab_size}, state {cfg.state_size}, "
            f"{'tied' if cfg.tie_word_embeddings else 'untied'} head")


def _hf_to_mbjs(source, dst, dtype, drop_untied_head, version, log):
    cfg = source.cfg
    if cfg.is_falcon:
        raise ValueError(
            f"{source.folder}: Falcon-Mamba applies a weightless RMSNorm to B, C and dt "
            f"(mixer_rms_eps {cfg.mixer_rms_eps}); MBJS has no way to say so and MBJS engines "
            "would silently compute a different model. Keep it in HF format.")
    if dtype == "bf16":
        raise ValueError("MBJS stores f32 (v1/v2) or f16 (v3) data, not bf16")
    notes = []
    if not cfg.tie_word_embeddings:
        if not drop_untied_head:
            raise ValueError(
                f"{source.folder}: the LM head is untied (lm_head.weight differs from the "
                "embedding), but MBJS always ties it to the embedding. Pass "
                "--drop-untied-head to write it anyway, losing lm_head.weight: the MBJS model "
                "will predict with the embedding matrix instead.")
        notes.append("dropped the untied lm_head.weight (MBJS ties the head to the embedding)")
    if abs(cfg.layer_norm_epsilon - 1e-5) > 1e-12:
        notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} is not stored in MBJS")
    size = write_mbjs(dst, cfg, source.get, dtype, version)
    absent = sorted({h.split(".mixer.")[-1] for _, _, h, hs, _ in hf_names.mbjs_plan(cfg)
                     if hs is None})
    if absent:
        notes.append("wrote zeros for " + ", ".join(absent) + " (absent in HF, present in MBJS)")
    notes.append("reversed conv1d taps into MBJS order")
    version = version or (3 if dtype == "f16" else 2)
    log(f"converted HF {source.folder} ({_describe(cfg)}, {'/'.join(source.dtypes)}) -> "
        f"MBJS v{version} {dtype} {dst} ({size} bytes, CRC trailer)")
    for n in notes:
        log("  " + n)
    return cfg


def _mbjs_to_hf(src, dst, dtype, shards, max_shard_bytes, hints, log):
    source = MbjsSource(src, hints)
    cfg = source.cfg
    tensors, notes = {}, []
    bias_nonzero = {}
    for hname, hshape, how, a in source.hf_tensors():
        if how == "bias" and hshape is None:
            nz = float(np.max(np.abs(a))) if a.size else 0.0
            kind = hname.split(".mixer.")[-1]
            if nz:
                bias_nonzero.setdefault(kind, (hname, nz))
        tensors[hname] = a
    if "x_proj.bias" in bias_nonzero:
        name, nz = bias_nonzero["x_proj.bias"]
        raise ValueError(f"{src}: {name} is nonzero (max |b| {nz:g}); HF Mamba's x_proj has "
                         "no bias, so this model cannot be written without changing its outputs")
    if "conv1d.bias" in bias_nonzero:
        name, nz = bias_nonzero["conv1d.bias"]
        raise ValueError(f"{src}: {name} is nonzero (max |b| {nz:g}) but use_conv_bias=false "
                         "was asked for")
    if ("in_proj.bias" in bias_nonzero or "out_proj.bias" in bias_nonzero) and not cfg.use_bias:
        cfg.use_bias = True
        notes.append("in_proj/out_proj biases are nonzero: set use_bias=true")
    want = hf_names.expected_tensors(cfg)
    dropped = sorted({n.split(".mixer.")[-1] for n in tensors if n not in want})
    tensors = {n: a for n, a in tensors.items() if n in want}
    for n in want:
        if n not in tensors:       # use_bias/use_conv_bias forced on by a hint: zeros
            tensors[n] = np.zeros(want[n], np.float32)
    st = ST_DTYPE[dtype] if dtype else ("F16" if source.layout.dtype == "f16" else "F32")
    files = write_hf(dst, cfg, tensors, st, shards, max_shard_bytes)
    if dropped:
        notes.append("dropped all-zero " + ", ".join(dropped) + " (HF config has no such bias)")
    notes.append("reversed conv taps into PyTorch conv1d order; head tied to the embedding")
    notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} (MBJS does not store it; "
                 "npm's engine uses 1e-6, give --layer-norm-epsilon to match)")
    log(f"converted MBJS v{source.layout.version} {source.layout.dtype} {src} -> HF {dst} "
        f"({_describe(cfg)}, {TORCH_NAME[st]}): {', '.join(files)}")
    for n in notes:
        log("  " + n)
    return cfg


def _hf_to_hf(source, dst, dtype, shards, max_shard_bytes, log):
    if dst.resolve() == source.folder.resolve():
        raise ValueError(f"{dst}: destination is the source folder")
    cfg = source.cfg
    if dtype:
        st = ST_DTYPE[dtype]
    elif len(source.dtypes) == 1:
        st = source.dtypes[0]
    else:
        raise ValueError(f"{source.folder}: mixed dtypes {source.dtypes}; give --dtype")
    if st not in TORCH_NAME:
        raise ValueError(f"{source.folder}: cannot write {st}; give --dtype f32|f16|bf16")
    names = hf_names.expected_tensors(cfg)
    tensors = {n: (lambda n=n: source.get(n)) for n in names}
    files = write_hf(dst, cfg, tensors, st, shards, max_shard_bytes)
    copied = []
    for side in SIDE_FILES:
        if (source.folder / side).is_file():
            shutil.copyfile(source.folder / side, dst / side)
            copied.append(side)
    log(f"converted HF {source.folder} ({_describe(cfg)}, {'/'.join(source.dtypes)}, "
        f"{len(source.files)} file(s)) -> HF {dst} ({TORCH_NAME[st]}): {', '.join(files)}")
    if copied:
        log("  copied " + ", ".join(copied))
    return cfg


def parse_size(text):
    """'5GB', '500MB', '1024' -> bytes (decimal units, as transformers' max_shard_size)."""
    t = str(text).strip().upper()
    for unit, mult in (("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                       ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(unit):
            return int(float(t[:-len(unit)]) * mult)
    return int(t)
