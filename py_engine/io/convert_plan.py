"""Conversion plans: the ONE place where checkpoint conversions are decided.

Two executors run the plans, byte for byte alike: the convert page's (web/js/worker.mjs,
"convert page" section, over dropped Files) and the host's (tools/convert_host.py, numpy:
`mambaweb convert`, write_hf, write_mbjs). Both hand over file ids, paths and sizes and an `io`
that reads small byte ranges (`io.read(id, start, end)`: magic bytes, safetensors and MBJS
headers, JSON files, a pytorch_model.bin's zip directory and pickle via torch_bin) and does two
reductions over big ranges this module must not see: `io.crc32` (MBJS trailer) and
`io.max_abs` (are MBJS's bias tensors zero?). `plan` returns, per output file, a list of ops

  {"op": "bytes", "b64": ...}                                small bytes Python built
  {"op": "copy", "src", "start", "end"}                      raw byte range of an input file
  {"op": "cast", "src", "start", "end", "from", "to"}        element-wise dtype change
  {"op": "flip", ...cast fields..., "rows", "cols"}          cast + reverse each row (conv taps)
  {"op": "zeros", "n"}                                       n zero bytes
  {"op": "crc_trailer"}                                      MBJS "EVCR" + CRC-32 of the file so far

Decided here: which tensors (mamba_ssm names via layouts.internal_name; a torch state dict's integer
buffers skipped), their order and header bytes (as safetensors.save_file), dtypes (safetensors'
names F32/F16/BF16), the MBJS conv tap flip, shard layout, config.json text, side files, every
refusal and its message. Executors only round (to nearest even; NaNs as torch 2.13 CPU writes
them) and move bytes. Pure stdlib: this module is imported inside Pyodide.
"""
import base64
import json
import re

from py_engine.io import hf_names, mbjs
from py_engine.io.layouts import external_name, internal_name, writes_tied_head
from py_engine.io.safetensors_format import (DTYPE_SIZES, NeedMoreBytes, TensorInfo,
                                             build_header, build_index, header_length,
                                             parse_header, parse_index, safetensors_order)
from py_engine.io.torch_bin import read_bin_header
from py_engine.models.config import MambaConfig

ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
MBJS_ST_DTYPE = {"f32": "F32", "f16": "F16"}
# Small files that travel with a model when converting to HF.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.json", "merges.txt", "generation_config.json", "README.md")
TORCH_EXTS = (".bin", ".pt", ".pth", ".ckpt")
ZIP_MAGIC = b"PK\x03\x04"          # torch.save's format since torch 1.6
MAX_JSON_BYTES = 64 << 20          # config.json / index.json are read whole into Python
WHAT_TO_DROP = ("Drop an HF model folder (config.json + model.safetensors, or the shards + "
                "model.safetensors.index.json; mamba_ssm's config.json + pytorch_model.bin "
                "works too), or one MBJS .bin file.")


class DroppedFile:
    def __init__(self, entry):
        self.id = entry["id"]
        self.path = str(entry.get("path") or entry.get("name") or self.id).lstrip("/")
        self.name = self.path.rsplit("/", 1)[-1]
        self.size = int(entry["size"])
        self.folder = self.path.rsplit("/", 1)[0] if "/" in self.path else ""

    def __repr__(self):
        return f"DroppedFile({self.path!r}, {self.size})"


# --- reading small things -------------------------------------------------------

async def _read(io, f, start, end):
    end = min(end, f.size)
    data = bytes(await io.read(f.id, start, end)) if end > start else b""
    if len(data) != end - start:
        raise ValueError(f"{f.path}: could read only {len(data)} of bytes {start}-{end} "
                         "(file changed on disk while the page had it?)")
    return data


async def _read_json(io, f):
    if f.size > MAX_JSON_BYTES:
        raise ValueError(f"{f.path}: {f.size} bytes is too large for a JSON metadata file")
    raw = await _read(io, f, 0, f.size)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{f.path}: not valid JSON ({e})") from None


async def _safetensors_header(io, f):
    first8 = await _read(io, f, 0, 8) if f.size >= 8 else b""
    n = header_length(first8, f.size, f.path)
    return parse_header(first8 + await _read(io, f, 8, 8 + n), f.size, f.path)


class _FileSource:
    """torch_bin's byte-source interface (size, ranged reads) over one input file."""

    def __init__(self, io, f):
        self.io, self.f = io, f

    def where(self, fname):
        return self.f.path

    async def size(self, fname):
        return self.f.size

    async def read(self, fname, start, end):
        return await _read(self.io, self.f, start, end)


_CRC_SEEN = {}        # (file id, size, data end) -> CRC; the Worker never reuses a file id


async def _mbjs_layout(io, f, verify_crc=True):
    prefix = await _read(io, f, 0, min(f.size, 1 << 16))
    while True:
        try:
            layout = mbjs.parse_header(prefix, f.size, f.path)
            break
        except NeedMoreBytes as e:
            prefix += await _read(io, f, len(prefix), e.needed)
    if layout.has_trailer:
        tail = await _read(io, f, layout.data_end, layout.data_end + mbjs.TRAILER_BYTES)
        crc = None
        if verify_crc:      # one pass over the file per drop, not one per inspect + plan
            key = (f.id, f.size, layout.data_end)
            if key not in _CRC_SEEN:
                _CRC_SEEN[key] = int(await io.crc32(f.id, 0, layout.data_end))
            crc = _CRC_SEEN[key]
        mbjs.check_trailer(layout, tail, crc)
    return layout


# --- what was dropped ------------------------------------------------------------------

def _hidden(f):
    return any(part.startswith(".") for part in f.path.split("/"))


def _describe(cfg):
    return (f"{cfg.model_type}, {cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}, "
            f"vocab {cfg.vocab_size}, state {cfg.state_size}, "
            f"{'tied' if cfg.tie_word_embeddings else 'untied'} head")


def _looks_like(f, head):
    """A plain-words guess at what a non-model file is, for the error message."""
    if f.name.endswith(TORCH_EXTS) and head[:1] == b"\x80":
        return (f"{f.name} looks like a PyTorch checkpoint in the legacy (pre-1.6) pickle "
                "format, which is read only by running its code: re-save it with torch.save "
                "(zip format) or save_pretrained(..., safe_serialization=True) first")
    if head[:4] == b"GGUF":
        return f"{f.name} is a GGUF file, which is not converted here"
    return (f"{f.name} is neither an HF model file (config.json, *.safetensors, "
            "model.safetensors.index.json, pytorch_model.bin) nor an MBJS checkpoint (it does "
            "not start with the MBJS magic)")


async def inspect(entries, io, hints=None):
    """Classify the input files ([{id, path, size}]) and parse every header. Returns a Source;
    raises ValueError with a plain message (naming what to drop) when the set is not a model.
    hints: MBJS -> HF settings the file cannot hold (layer_norm_epsilon, token ids, ...)."""
    files = [DroppedFile(e) for e in entries]
    if not files:
        raise ValueError("Nothing was dropped. " + WHAT_TO_DROP)
    visible = [f for f in files if not _hidden(f)]
    configs = [f for f in visible if f.name == "config.json"]
    st_indexes = [f for f in visible if f.name.endswith(".safetensors.index.json")]
    bin_indexes = [f for f in visible if f.name.endswith(".bin.index.json")]
    weights = [f for f in visible if f.name.endswith(".safetensors")]
    known = {id(f) for f in configs + st_indexes + bin_indexes + weights}
    mbjs_files, torch_files, others = [], [], []
    for f in visible:
        if id(f) in known:
            continue
        head = await _read(io, f, 0, min(f.size, 8))
        if head[:4] == mbjs.MAGIC_BYTES:
            mbjs_files.append(f)
        elif ((head[:4] == ZIP_MAGIC and f.name.endswith(TORCH_EXTS))
              or (configs and re.fullmatch(r"pytorch_model.*\.bin", f.name))):
            # with a config, a broken pytorch_model.bin is the model's: torch_bin says what
            # is wrong with it (alone, _looks_like below says what it seems to be)
            torch_files.append(f)
        elif f.name not in SIDE_FILES:
            others.append((f, head))

    for group, what in ((configs, "config.json"), (st_indexes, "index files"),
                        (bin_indexes, "index files")):
        folders = sorted({f.folder or "." for f in group})
        if len(group) > 1:
            raise ValueError(f"Several models were dropped ({what} in {', '.join(folders)}); "
                             "drop one model at a time.")
    if len(mbjs_files) > 1:
        raise ValueError("Several MBJS files were dropped (" +
                         ", ".join(f.name for f in mbjs_files) + "); drop one at a time.")
    hf_weights = weights + torch_files + st_indexes + bin_indexes
    if mbjs_files and hf_weights:
        raise ValueError(f"Both an MBJS file ({mbjs_files[0].name}) and HF weights "
                         f"({hf_weights[0].name}) were dropped; drop one model at a time.")
    ignored = [f.path for f, _ in others] + [f.path for f in files if _hidden(f)]

    if mbjs_files:
        return await _inspect_mbjs(io, mbjs_files[0], configs[0] if configs else None,
                                   hints, ignored)
    if not hf_weights and not configs:
        if others:
            f, head = others[0]
            more = f" (and {len(others) - 1} other files)" if len(others) > 1 else ""
            raise ValueError(_looks_like(f, head) + more + ". " + WHAT_TO_DROP)
        raise ValueError("No model files were dropped. " + WHAT_TO_DROP)
    if not configs:
        what = ", ".join(f.name for f in hf_weights[:3])
        raise ValueError(f"{what} came without config.json, which says what the tensors "
                         "are. Drop the whole model folder, or select config.json together "
                         "with the weight files.")
    if not hf_weights:
        why = "".join(f" ({_looks_like(f, head)})" for f, head in others[:1])
        raise ValueError(f"{configs[0].path} came without weights{why}. Also drop "
                         "model.safetensors or pytorch_model.bin (or every shard and "
                         "its index .json) - or simply the whole folder.")
    groups = [(weights, st_indexes, "model.safetensors"),
              (torch_files, bin_indexes, "pytorch_model.bin")]
    return await _inspect_hf(io, configs[0], groups,
                             [f for f in visible if f.name in SIDE_FILES], ignored)


def _mbjs_refusal(cfg, base, dtype="f32", drop_untied_head=False):
    """Why an HF model cannot become MBJS (a message naming the way out), or None."""
    try:
        hf_names.mbjs_plan(cfg)           # refuses other than Mamba-1/-3/attention by kind
    except ValueError as e:
        return f"{base}: {e}."
    if cfg.is_falcon:
        return (f"{base} is Falcon-Mamba: it applies a weightless RMSNorm to B, C and dt "
                f"(mixer_rms_eps {cfg.mixer_rms_eps}); MBJS has no way to say so and MBJS "
                "engines would silently compute a different model. Keep it in HF format: "
                "choose HF safetensors as the target.")
    if dtype == "bf16":
        return "MBJS stores f32 (v1/v2) or f16 (v3) data, not bf16: choose f32 or f16."
    if not cfg.tie_word_embeddings and not drop_untied_head:
        return (f"{base} has an untied LM head (lm_head.weight differs from the embedding), "
                "but MBJS always ties the head to the embedding. Choose HF safetensors as the "
                "target to keep it, or drop the head on purpose (tick \"drop the untied "
                "head\"; mambaweb convert: --drop-untied-head): the MBJS model then predicts "
                "with the embedding matrix instead.")
    return None


class Source:
    kind = ""

    def describe(self):
        raise NotImplementedError


class HFSource(Source):
    kind = "hf"

    def __init__(self, cfg, config_file, files, infos, side_files, base, ignored):
        self.cfg, self.config_file, self.files = cfg, config_file, files
        self.infos = infos                # {tensor name: (DroppedFile, TensorInfo)}
        self.side_files, self.base, self.ignored = side_files, base, ignored
        self.dtypes = sorted({t.dtype for _, t in infos.values()})
        torch = any(f.name.endswith(TORCH_EXTS) for f in files)
        self.format = "PyTorch .bin" if torch else "safetensors"

    def describe(self):
        return {"kind": "hf", "name": self.base, "config": _describe(self.cfg),
                "model_type": self.cfg.model_type, "dtypes": self.dtypes,
                "tied": self.cfg.tie_word_embeddings, "falcon": self.cfg.is_falcon,
                "propose": "hf" if _mbjs_refusal(self.cfg, self.base) else "mbjs",
                "files": [f.path for f in self.files], "ignored": self.ignored,
                "summary": f"HF {self.base}: {_describe(self.cfg)}, {'/'.join(self.dtypes)}, "
                           f"{len(self.files)} {self.format} file(s)"}


class MbjsSource(Source):
    kind = "mbjs"

    def __init__(self, file, layout, cfg, plan, base, ignored, notes):
        self.file, self.layout, self.cfg, self.plan = file, layout, cfg, plan
        self.base, self.ignored, self.notes = base, ignored, notes

    def describe(self):
        lay = self.layout
        return {"kind": "mbjs", "name": self.base, "config": _describe(self.cfg),
                "model_type": self.cfg.model_type, "version": lay.version, "dtypes": [MBJS_ST_DTYPE[lay.dtype]],
                "tied": True, "falcon": False, "propose": "hf", "files": [self.file.path],
                "ignored": self.ignored, "notes": self.notes,
                "summary": f"MBJS v{lay.version} {lay.dtype} {self.file.name}: "
                           f"{_describe(self.cfg)}, "
                           f"{'CRC checked' if lay.has_trailer else 'no CRC trailer'}"}


def _base_name(folder, fallback):
    """The model's name for output files: its folder, or org--name from an HF cache path."""
    parts = [p for p in folder.split("/") if p]
    for p in parts:
        if p.startswith("models--"):       # models--org--name/snapshots/<rev>/
            return p.split("--")[-1]
    return parts[-1] if parts else fallback


async def _weight_files(io, groups):
    """(files, where) from groups [(weight files, their index files, main name)]: safetensors
    first (index, model.safetensors, a lone file), then PyTorch .bin likewise, as hf_loader."""
    for group, indexes, main in groups:
        by_name = {f.name: f for f in group}
        if indexes:
            names = sorted(set(parse_index(json.dumps(await _read_json(io, indexes[0])),
                                           indexes[0].path).values()))
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ValueError(f"{indexes[0].path} lists {', '.join(missing)}, which "
                                 f"{'was' if len(missing) == 1 else 'were'} not dropped. Drop "
                                 "every shard (or simply the whole folder).")
            return [by_name[n] for n in names], indexes[0].path
        if main in by_name or len(group) == 1:
            f = by_name.get(main) or group[0]
            return [f], f.path
        if group:
            raise ValueError(f"{len(group)} weight files ({', '.join(sorted(by_name))}) came "
                             f"without {main}.index.json, which says which tensor lives where. "
                             "Drop the index too (or the whole folder).")
    raise ValueError("No weight files were dropped. " + WHAT_TO_DROP)


async def _inspect_hf(io, config_file, groups, side_files, ignored):
    cfg = MambaConfig.from_hf_dict(await _read_json(io, config_file), config_file.path)
    files, where = await _weight_files(io, groups)
    ignored = ignored + [f.path for g, _, _ in groups for f in g if f not in files]
    want = hf_names.expected_tensors(cfg)
    infos = {}
    for f in files:
        torch = f.name.endswith(TORCH_EXTS)
        tensors = (await read_bin_header(_FileSource(io, f), f.name) if torch
                   else (await _safetensors_header(io, f)).tensors)
        for t in tensors:
            name = internal_name(t.name, cfg)  # mamba_ssm's backbone.embedding, model.*
            if t.dtype not in TORCH_NAME:
                if name in want:
                    raise ValueError(f"{f.path}: tensor {name} is {t.dtype}; converting reads "
                                     "F32, F16 and BF16 weights")
                if torch:
                    continue                          # a torch state dict's integer buffers
            if name in infos:
                raise ValueError(f"{f.path}: tensor {name} also appears in "
                                 f"{infos[name][0].path}")
            infos[name] = (f, t)
    hf_names.check_tensors(cfg, {n: t.shape for n, (_, t) in infos.items()}, where)
    base = _base_name(config_file.folder, cfg.model_type)
    return HFSource(cfg, config_file, files, infos, side_files, base, ignored)


async def _inspect_mbjs(io, f, config_file, hints, ignored):
    hints = dict(hints or {})
    notes = []
    if config_file is not None:
        cfg = MambaConfig.from_hf_dict(await _read_json(io, config_file), config_file.path)
        from_cfg = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k != "layers"}
        hints = {**from_cfg, **hints}
        notes.append(f"settings from {config_file.path} (dimensions checked against the file)")
    layout = await _mbjs_layout(io, f)
    cfg = mbjs.infer_config(layout, hints)
    name = f.name[:-4] if f.name.endswith(".bin") else f.name.rsplit(".", 1)[0] or f.name
    return MbjsSource(f, layout, cfg, hf_names.mbjs_plan(cfg), name, ignored, notes)


def tensor_source(cfg, tensors, base="model"):
    """An HFSource over float32 tensors outside any dropped file (the host's write_hf and
    write_mbjs): tensors {hf name: (file id, shape)}; file `id` holds exactly that tensor's
    little-endian f32 bytes."""
    infos = {}
    for name, (fid, shape) in tensors.items():
        nbytes = _numel(shape) * 4
        infos[name] = (DroppedFile({"id": fid, "path": name, "size": nbytes}),
                       TensorInfo(name, "F32", tuple(shape), 0, nbytes))
    return HFSource(cfg, None, [], infos, [], base, [])


# --- plans -------------------------------------------------------------------------

def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _b64(data):
    return {"op": "bytes", "b64": base64.b64encode(bytes(data)).decode("ascii")}


def _tensor_op(src, start, end, from_dt, to_dt, label, flip=None):
    """Bytes [start, end) of `src` stored as from_dt, written as to_dt.

    F32 -> F32 is a byte copy; every other pair goes through float32 and back (so F16/BF16
    NaNs come out in torch's canonical form)."""
    if flip is None and from_dt == to_dt == "F32":
        return {"op": "copy", "src": src.id, "start": start, "end": end, "label": label}
    op = {"op": "cast", "src": src.id, "start": start, "end": end, "from": from_dt,
          "to": to_dt, "label": label}
    if flip is not None:
        op.update(op="flip", rows=flip[0], cols=flip[1])
    return op


def _output(name, ops, size):
    return {"name": name, "ops": ops, "size": size}


def _safetensors_output(name, items):
    """items: [(tensor name, st dtype, shape, op)] -> output writing them as
    safetensors.save_file would (order, header bytes)."""
    entries = safetensors_order([(n, dt, shp) for n, dt, shp, _ in items])
    head, infos = build_header(entries, {"format": "pt"}, name)
    op_of = {n: op for n, _, _, op in items}
    ops = [_b64(head)] + [op_of[i.name] for i in infos]
    size = len(head) + sum(i.nbytes for i in infos)
    return _output(name, ops, size)


def _text_output(name, text):
    data = text.encode("utf-8")
    return _output(name, [_b64(data)], len(data))


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


def _hf_outputs(cfg, st, ops, options):
    """An HF folder's files: model.safetensors (or shards + index), then config.json.
    ops: {hf name: op} covering hf_names.expected_tensors(cfg), in its order."""
    want = hf_names.expected_tensors(cfg)
    if cfg.tie_word_embeddings and writes_tied_head(cfg.model_type, cfg):
        # transformers 5.x does not tie NemotronH's head: write it as the embedding's copy
        want[hf_names.LM_HEAD] = want[hf_names.EMBED]
        ops = dict(ops, **{hf_names.LM_HEAD: ops[hf_names.EMBED]})
    shards, cap = options.get("shards"), options.get("max_shard_bytes")
    sizes = [(n, _numel(s) * DTYPE_SIZES[st]) for n, s in want.items()]
    groups = [list(want)] if not shards and not cap else plan_shards(sizes, shards, cap)
    items = {n: (external_name(cfg.model_type, n, cfg), st, want[n], ops[n]) for n in want}
    if len(groups) == 1 and not shards:
        outputs = [_safetensors_output("model.safetensors", list(items.values()))]
    else:
        outputs, weight_map = [], {}
        for k, group in enumerate(groups, 1):
            fname = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
            outputs.append(_safetensors_output(fname, [items[n] for n in group]))
            weight_map.update({n: fname for n in group})
        outputs.append(_text_output("model.safetensors.index.json",
                                    build_index(weight_map, sum(b for _, b in sizes))))
    conf = cfg.to_hf_dict()
    conf.pop("torch_dtype", None)
    if "model_type" in conf:    # mamba_ssm's config.json (its MambaConfig dataclass) takes no
        conf["dtype"] = TORCH_NAME[st]      # keys beyond its fields: MambaConfig(**json) raises
    outputs.append(_text_output("config.json", json.dumps(conf, indent=2, sort_keys=True)
                                + "\n"))
    return outputs


async def plan(source, target, dtype=None, options=None, io=None):
    """The conversion plan (a JSON-able dict) for `source` -> `target` ("mbjs" | "hf").
    options: drop_untied_head, mbjs_version (1-3), shards | max_shard_bytes (HF output)."""
    options = options or {}
    if dtype in ("", "keep"):
        dtype = None
    if dtype is not None and dtype not in ST_DTYPE:
        raise ValueError(f"dtype {dtype!r} is not one of f32, f16, bf16")
    if options.get("shards") and options.get("max_shard_bytes"):
        raise ValueError("give a shard count or a maximum shard size, not both")
    if target == "mbjs":
        if source.kind == "mbjs":
            raise ValueError("This is already an MBJS file: choose HF safetensors as the "
                             "target (MBJS -> MBJS is not a conversion).")
        if options.get("shards") or options.get("max_shard_bytes"):
            raise ValueError("MBJS is a single file; shards apply to HF output")
        out = _hf_to_mbjs(source, dtype, options)
    elif target == "hf":
        out = (await _mbjs_to_hf(source, dtype, options, io) if source.kind == "mbjs"
               else _hf_to_hf(source, dtype, options))
    else:
        raise ValueError(f"target {target!r} is not one of 'mbjs', 'hf'")
    out["total"] = sum(o["size"] for o in out["outputs"])
    return out


def _hf_to_mbjs(source, dtype, options):
    cfg = source.cfg
    version = options.get("mbjs_version")
    if version is not None and version not in mbjs.VERSION_DTYPE:
        raise ValueError(f"MBJS version {version} is not one of 1, 2, 3")
    dtype = dtype or (mbjs.VERSION_DTYPE[version] if version else "f32")
    drop_head = bool(options.get("drop_untied_head"))
    refusal = _mbjs_refusal(cfg, source.base, dtype, drop_head)
    if refusal:
        raise ValueError(refusal)
    version = version or (3 if dtype == "f16" else 2)
    if mbjs.VERSION_DTYPE[version] != dtype:
        raise ValueError(f"MBJS v{version} stores {mbjs.VERSION_DTYPE[version]}, not {dtype}")
    notes = []
    if not cfg.tie_word_embeddings:
        notes.append("dropped the untied lm_head.weight (MBJS ties the head to the embedding)")
    if abs(cfg.layer_norm_epsilon - 1e-5) > 1e-12:
        notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} is not stored in MBJS")
    out_dt = MBJS_ST_DTYPE[dtype]
    width = DTYPE_SIZES[out_dt]
    entries = hf_names.mbjs_plan(cfg)
    numels = [_numel(mshape) for _, mshape, _, _, _ in entries]
    head = mbjs.build_header(numels, mbjs.layer_type_names(cfg), version)
    ops = [_b64(head)]
    for entry, n in zip(entries, numels):
        mname, mshape, hname, hshape, how = entry
        if hshape is None:
            ops.append({"op": "zeros", "n": n * width, "label": mname})
            continue
        for part, _, _, _ in hf_names.mbjs_parts(entry):     # "rows": q | k | v in turn
            f, t = source.infos[part]
            ops.append(_tensor_op(f, t.start, t.end, t.dtype, out_dt, part,
                                  flip=tuple(mshape) if how == "flip" else None))
    ops.append({"op": "crc_trailer"})
    size = len(head) + sum(numels) * width + mbjs.TRAILER_BYTES
    absent = sorted({hf_names.mbjs_label(h) for _, _, h, hs, how in entries
                     if hs is None and how == "bias"})
    if absent:
        notes.append("wrote zeros for " + ", ".join(absent) + " (absent in HF, present in MBJS)")
    if "attention" in cfg.layers:
        notes.append(_attention_mbjs_note(cfg))
    if "mamba3" in cfg.layers:
        notes.extend(_mamba3_mbjs_notes(cfg))
    else:
        notes.append("reversed conv1d taps into MBJS order")
    name = f"{source.base}.bin"
    return {"outputs": [_output(name, ops, size)], "archive": None, "download": name,
            "notes": notes,
            "summary": f"HF {source.base} ({_describe(cfg)}, {'/'.join(source.dtypes)}) -> "
                       f"MBJS v{version} {dtype} {name} ({size} bytes, CRC trailer)"}


def _attention_mbjs_note(cfg):
    """What an MBJS attention layer (npm's AttentionBlock order) keeps and what it cannot."""
    return (f"attention layers written as MBJS layer type 3 in the npm AttentionBlock's "
            f"parameter order (wQKV = q|k|v rows, bQKV, wO, bO, normWeight); MBJS does not store "
            f"the head count ({cfg.attention_heads}): give it back when reading (a config.json "
            f"beside the file, or mambaweb convert --attention-heads {cfg.attention_heads}); "
            + mbjs.ATTENTION_NPM_FORWARD)


def _mamba3_mbjs_notes(cfg):
    """What an MBJS file of our Mamba-3 layer type says, and what it cannot (mbjs.py)."""
    tid = mbjs.layer_type_names(cfg)[0]
    notes = [f"Mamba-3 layers written as MBJS layer type {mbjs.LAYER_TYPE_IDS[tid]} ({tid}, "
             "mambaweb's own: the npm engine cannot read it)"]
    if abs(cfg.A_floor - 1e-4) > 1e-12:
        notes.append(f"A_floor {cfg.A_floor} is not stored in MBJS (a reader assumes 1e-4): "
                     "give it back when reading (a config.json beside the file, or "
                     "mambaweb convert --a-floor)")
    return notes


def mbjs_tensor_ops(source, st):
    """[(mbjs entry, op)] for every tensor of an MBJS source, read as `st` in HF's layout
    (conv taps flipped back to PyTorch's order): the one place that says how MBJS maps to HF."""
    lay = source.layout
    in_dt = MBJS_ST_DTYPE[lay.dtype]
    out = []
    for idx, entry in enumerate(source.plan):
        mname, mshape, hname, hshape, how = entry
        if isinstance(hname, tuple):       # npm's wQKV / bQKV: one HF tensor per row block
            for part, pshape, a, b in hf_names.mbjs_parts(entry):
                sub = (mname, (mshape[0] // len(hname),) + tuple(mshape[1:]), part, pshape,
                       how)
                start = lay.offsets[idx] + a * DTYPE_SIZES[in_dt]
                end = lay.offsets[idx] + b * DTYPE_SIZES[in_dt]
                out.append((sub, _tensor_op(source.file, start, end, in_dt, st, part)))
            continue
        start = lay.offsets[idx]
        end = start + lay.numels[idx] * DTYPE_SIZES[in_dt]
        out.append((entry, _tensor_op(source.file, start, end, in_dt, st, hname,
                                      flip=tuple(mshape) if how == "flip" else None)))
    return out


async def _mbjs_to_hf(source, dtype, options, io):
    cfg, lay = source.cfg, source.layout
    in_dt = MBJS_ST_DTYPE[lay.dtype]
    width = DTYPE_SIZES[in_dt]
    notes = list(source.notes)
    # Which of MBJS's bias tensors that HF lacks are nonzero? (io reduces, Python decides.)
    absent = [(idx, e) for idx, e in enumerate(source.plan) if e[4] == "bias" and e[3] is None]
    ranges = [[lay.offsets[idx], lay.offsets[idx] + lay.numels[idx] * width] for idx, _ in absent]
    maxabs = list(await io.max_abs(source.file.id, ranges, in_dt)) if ranges else []
    bias_nonzero = {}
    for (idx, e), m in zip(absent, maxabs):
        if float(m):
            label = hf_names.mbjs_label(e[2])
            bias_nonzero.setdefault(label, (e[0] if isinstance(e[2], tuple) else e[2],
                                            float(m)))
    if "q|k|v_proj.bias" in bias_nonzero and not cfg.attention_qkv_bias:
        cfg.attention_qkv_bias = True
        notes.append("attention bQKV is nonzero: set attention_qkv_bias=true")
    if "o_proj.bias" in bias_nonzero and not cfg.attention_out_bias:
        cfg.attention_out_bias = True
        notes.append("attention bO is nonzero: set attention_out_bias=true")
    if "x_proj.bias" in bias_nonzero:
        name, nz = bias_nonzero["x_proj.bias"]
        raise ValueError(f"{source.file.path}: {name} is nonzero (max |b| {nz:g}); HF Mamba's "
                         "x_proj has no bias, so this model cannot be written without changing "
                         "its outputs")
    if "conv1d.bias" in bias_nonzero:
        name, nz = bias_nonzero["conv1d.bias"]
        raise ValueError(f"{source.file.path}: {name} is nonzero (max |b| {nz:g}) but "
                         "use_conv_bias=false was asked for")
    if ("in_proj.bias" in bias_nonzero or "out_proj.bias" in bias_nonzero) \
            and not cfg.use_bias:
        cfg.use_bias = True
        notes.append("in_proj/out_proj biases are nonzero: set use_bias=true")
    st = ST_DTYPE[dtype] if dtype else in_dt
    want = hf_names.expected_tensors(cfg)
    ops = {e[2]: op for e, op in mbjs_tensor_ops(source, st) if e[2] in want}
    for n, shape in want.items():      # use_bias/use_conv_bias forced on by a hint: zeros
        ops.setdefault(n, {"op": "zeros", "n": _numel(shape) * DTYPE_SIZES[st], "label": n})
    outputs = _hf_outputs(cfg, st, ops, options)
    dropped = sorted({hf_names.mbjs_label(e[2]) for e in source.plan
                      if not any(part in want for part, _, _, _ in hf_names.mbjs_parts(e))
                      and e[4] != "absent"})
    if dropped:
        notes.append("dropped all-zero " + ", ".join(dropped) + " (HF config has no such bias)")
    if "mamba3" in cfg.layers:
        notes.append(f"MBJS layer type {mbjs.layer_type_names(cfg)[0]}: A activation "
                     f"{'heavy-tail' if cfg.a_heavy_tail else 'softplus'}; A_floor "
                     f"{cfg.A_floor} and chunk_size {cfg.chunk_size} are not stored in MBJS "
                     "(bring a config.json with the file, or give --a-floor, to set them); "
                     "head tied to the embedding")
    else:
        notes.append("reversed conv taps into PyTorch conv1d order; head tied to the embedding")
        if "attention" in cfg.layers:
            notes.append(f"attention layers (MBJS type 3, the npm AttentionBlock's order): "
                         f"{cfg.attention_heads} heads of {cfg.attention_head_dim} channels (the "
                         "head count is not in the file; it came from the hints); written with "
                         "mambaweb's HF-style names (config.json layers), which transformers "
                         "has no class for; " + mbjs.ATTENTION_NPM_FORWARD)
        notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} (MBJS does not store it; "
                     "npm's engine uses 1e-6: to match, set it on the convert page, give "
                     "--layer-norm-epsilon, or bring a config.json with the MBJS file)")
    folder = f"{source.base}-hf-{TORCH_NAME[st]}"
    return {"outputs": outputs, "archive": {"kind": "zip", "folder": folder},
            "download": folder + ".zip", "notes": notes,
            "summary": f"MBJS v{lay.version} {lay.dtype} {source.file.name} -> HF {folder} "
                       f"({_describe(cfg)}, {TORCH_NAME[st]}): "
                       + ", ".join(o["name"] for o in outputs)}


def _hf_to_hf(source, dtype, options):
    cfg = source.cfg
    if dtype:
        st = ST_DTYPE[dtype]
    elif len(source.dtypes) == 1:
        st = source.dtypes[0]
    else:
        raise ValueError(f"{source.base} mixes dtypes {source.dtypes}: choose an output "
                         "dtype (f32, f16 or bf16).")
    ops = {}
    for n in hf_names.expected_tensors(cfg):
        f, t = source.infos[n]
        ops[n] = _tensor_op(f, t.start, t.end, t.dtype, st, n)
    outputs = _hf_outputs(cfg, st, ops, options)
    notes = []
    for side in SIDE_FILES:
        for f in source.side_files:
            if f.name == side and f.folder == source.config_file.folder:
                outputs.append(_output(side, [{"op": "copy", "src": f.id, "start": 0,
                                               "end": f.size, "label": side}], f.size))
                notes.append(f"copied {side}")
    if len(source.files) > 1 and outputs[0]["name"] == "model.safetensors":
        notes.append(f"joined {len(source.files)} shards into one model.safetensors")
    if source.format != "safetensors":
        notes.append(f"read {source.format} ({', '.join(f.name for f in source.files)}) "
                     "without torch")
    folder = f"{source.base}-{TORCH_NAME[st]}"
    return {"outputs": outputs, "archive": {"kind": "zip", "folder": folder},
            "download": folder + ".zip", "notes": notes,
            "summary": f"HF {source.base} ({_describe(cfg)}, {'/'.join(source.dtypes)}, "
                       f"{len(source.files)} {source.format} file(s)) -> HF {folder} "
                       f"({TORCH_NAME[st]}): " + ", ".join(o["name"] for o in outputs)}


# --- the page's entry point --------------------------------------------------------

class BrowserIO:
    """Reads through the Worker's file registry (web/js/worker.mjs, self.mwConvert)."""

    def __init__(self):
        import js
        self.c = js.mwConvert

    async def read(self, fid, start, end):
        return (await self.c.readSlice(fid, start, end)).to_bytes()

    async def crc32(self, fid, start, end):
        return int(await self.c.crc32Range(fid, start, end))

    async def max_abs(self, fid, ranges, dtype):
        from pyodide.ffi import to_js
        return list((await self.c.maxAbsRanges(fid, to_js(ranges), dtype)).to_py())


def _hints(options):
    hints = {}
    for key, what in (("layer_norm_epsilon", "layer norm epsilon"), ("A_floor", "A_floor")):
        value = (options or {}).get(key)
        if value not in (None, ""):
            try:
                hints[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{what} {value!r} is not a number") from None
    value = (options or {}).get("attention_heads")
    if value not in (None, ""):
        try:
            hints["attention_heads"] = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"attention heads {value!r} is not a whole number") from None
    return hints


async def handle(request, io=None):
    """{"action": "inspect" | "plan", "files": [{id, path, size}], "target", "dtype",
    "options"} -> {"source": ...} / {"source": ..., "plan": ...}, or {"error": message,
    "needs": the option the file needs and lacks (e.g. "attention_heads"), or None}."""
    io = io or BrowserIO()
    options = request.get("options") or {}
    try:
        source = await inspect(request.get("files") or [], io, _hints(options))
        out = {"source": source.describe()}
        if request.get("action") == "plan":
            out["plan"] = await plan(source, request.get("target"), request.get("dtype"),
                                     options, io)
        return out
    except ValueError as e:
        # a setting the file does not store (mbjs.MissingHint): the page asks for it by name
        return {"error": str(e), "needs": getattr(e, "hint", None)}
