"""Conversion plans for the convert page: Python decides, JS moves the bytes.

The page registers the dropped File objects in the Worker (web/js/worker.mjs, "convert page"
section) and hands Python only their ids, paths and sizes. Python reads the small parts it
must understand -- the first bytes of unknown files, safetensors JSON headers, config.json,
the index, an MBJS header and trailer -- through `io.read(id, start, end)`, and asks JS for
two reductions over big ranges it must not see: a CRC-32 (MBJS trailer check) and max |x|
(are MBJS's bias tensors zero?). It returns a *plan*: per output file, a list of ops

  {"op": "bytes", "b64": ...}                                small bytes Python built
  {"op": "copy", "src", "start", "end"}                      raw byte range of a dropped file
  {"op": "cast", "src", "start", "end", "from", "to"}        element-wise dtype change
  {"op": "flip", ...cast fields..., "rows", "cols"}          cast + reverse each row (conv taps)
  {"op": "zeros", "n"}                                       n zero bytes
  {"op": "crc_trailer"}                                      MBJS "EVCR" + CRC-32 of the file so far

which the Worker executes one tensor at a time over Blob slices (dtype rounding happens there,
on typed arrays: round to nearest even, NaNs as tools/convert_host.py writes them).

Every decision mirrors tools/convert_host.py (names, tensor order, header bytes, config.json
text, refusals), so the page's output is byte-identical to `mambaweb convert` for the same input;
tests/e2e/test_convert_page.py checks that. Dtype names are safetensors' (F32, F16, BF16).

Pure stdlib: this module is imported inside Pyodide.
"""
import base64
import json

from py_engine.io import hf_names, mbjs
from py_engine.io.safetensors_format import (DTYPE_SIZES, NeedMoreBytes, build_header,
                                             header_length, parse_header, parse_index,
                                             safetensors_order)
from py_engine.models.config import MambaConfig

ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
MBJS_ST_DTYPE = {"f32": "F32", "f16": "F16"}
# Small files that travel with a model when converting HF -> HF (as tools/convert_host.py).
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.json", "merges.txt", "generation_config.json", "README.md")
MAX_JSON_BYTES = 64 << 20          # config.json / index.json are read whole into Python
WHAT_TO_DROP = ("Drop an HF model folder (config.json + model.safetensors, or the shards + "
                "model.safetensors.index.json), or one MBJS .bin file.")


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
    torch_name = f.name.endswith((".bin", ".pt", ".pth", ".ckpt"))
    if torch_name and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):
        return (f"{f.name} looks like a PyTorch checkpoint (pickle); this page reads "
                "safetensors: save it with save_pretrained(..., safe_serialization=True) first")
    if head[:4] == b"GGUF":
        return f"{f.name} is a GGUF file, which this page does not convert"
    return (f"{f.name} is neither an HF model file (config.json, *.safetensors, "
            "model.safetensors.index.json) nor an MBJS checkpoint (it does not start with "
            "the MBJS magic)")


async def inspect(entries, io, hints=None):
    """Classify the dropped files and parse every header. Returns a Source; raises
    ValueError with a plain message (naming what to drop) when the set is not a model."""
    files = [DroppedFile(e) for e in entries]
    if not files:
        raise ValueError("Nothing was dropped. " + WHAT_TO_DROP)
    visible = [f for f in files if not _hidden(f)]
    configs = [f for f in visible if f.name == "config.json"]
    indexes = [f for f in visible if f.name.endswith(".safetensors.index.json")]
    weights = [f for f in visible if f.name.endswith(".safetensors")]
    known = {id(f) for f in configs + indexes + weights}
    mbjs_files, others = [], []
    for f in visible:
        if id(f) in known:
            continue
        head = await _read(io, f, 0, min(f.size, 8))
        if head[:4] == mbjs.MAGIC_BYTES:
            mbjs_files.append(f)
        elif f.name not in SIDE_FILES:
            others.append((f, head))

    for group, what in ((configs, "config.json"), (indexes, "index files")):
        folders = sorted({f.folder or "." for f in group})
        if len(group) > 1:
            raise ValueError(f"Several models were dropped ({what} in {', '.join(folders)}); "
                             "drop one model at a time.")
    if len(mbjs_files) > 1:
        raise ValueError("Several MBJS files were dropped (" +
                         ", ".join(f.name for f in mbjs_files) + "); drop one at a time.")
    if mbjs_files and (weights or indexes):
        raise ValueError(f"Both an MBJS file ({mbjs_files[0].name}) and HF safetensors "
                         "were dropped; drop one model at a time.")
    ignored = [f.path for f, _ in others] + [f.path for f in files if _hidden(f)]

    if mbjs_files:
        return await _inspect_mbjs(io, mbjs_files[0], configs[0] if configs else None,
                                   hints, ignored)
    if not weights and not configs and not indexes:
        if others:
            f, head = others[0]
            more = f" (and {len(others) - 1} other files)" if len(others) > 1 else ""
            raise ValueError(_looks_like(f, head) + more + ". " + WHAT_TO_DROP)
        raise ValueError("No model files were dropped. " + WHAT_TO_DROP)
    if not configs:
        what = ", ".join(f.name for f in (weights + indexes)[:3])
        raise ValueError(f"{what} came without config.json, which says what the tensors "
                         "are. Drop the whole model folder, or select config.json together "
                         "with the .safetensors files.")
    if not weights and not indexes:
        raise ValueError(f"{configs[0].path} came without weights. Also drop "
                         "model.safetensors (or every shard and "
                         "model.safetensors.index.json) - or simply the whole folder.")
    return await _inspect_hf(io, configs[0], indexes[0] if indexes else None, weights,
                             [f for f in visible if f.name in SIDE_FILES], ignored)


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

    def describe(self):
        return {"kind": "hf", "name": self.base, "config": _describe(self.cfg),
                "model_type": self.cfg.model_type, "dtypes": self.dtypes,
                "tied": self.cfg.tie_word_embeddings, "falcon": self.cfg.is_falcon,
                "files": [f.path for f in self.files], "ignored": self.ignored,
                "summary": f"HF {self.base}: {_describe(self.cfg)}, {'/'.join(self.dtypes)}, "
                           f"{len(self.files)} safetensors file(s)"}


class MbjsSource(Source):
    kind = "mbjs"

    def __init__(self, file, layout, cfg, plan, base, ignored, notes):
        self.file, self.layout, self.cfg, self.plan = file, layout, cfg, plan
        self.base, self.ignored, self.notes = base, ignored, notes

    def describe(self):
        lay = self.layout
        return {"kind": "mbjs", "name": self.base, "config": _describe(self.cfg),
                "version": lay.version, "dtypes": [MBJS_ST_DTYPE[lay.dtype]],
                "tied": True, "falcon": False, "files": [self.file.path],
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


async def _inspect_hf(io, config_file, index_file, weights, side_files, ignored):
    where_cfg = config_file.path
    cfg = MambaConfig.from_hf_dict(await _read_json(io, config_file), where_cfg)
    by_name = {f.name: f for f in weights}
    if index_file is not None:
        shard_of = parse_index(json.dumps(await _read_json(io, index_file)), index_file.path)
        names = sorted(set(shard_of.values()))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"{index_file.path} lists {', '.join(missing)}, which "
                             f"{'was' if len(missing) == 1 else 'were'} not dropped. Drop "
                             "every shard (or simply the whole folder).")
        files = [by_name[n] for n in names]
        extra = [f.path for f in weights if f.name not in names]
        ignored = ignored + extra
        where = index_file.path
    elif "model.safetensors" in by_name:
        files = [by_name["model.safetensors"]]
        ignored = ignored + [f.path for f in weights if f.name != "model.safetensors"]
        where = files[0].path
    elif len(weights) == 1:
        files = weights
        where = files[0].path
    else:
        raise ValueError(f"{len(weights)} .safetensors files ({', '.join(sorted(by_name))}) "
                         "came without model.safetensors.index.json, which says which "
                         "tensor lives where. Drop the index too (or the whole folder).")
    infos = {}
    for f in files:
        header = await _safetensors_header(io, f)
        for t in header.tensors:
            if t.name in infos:
                raise ValueError(f"{f.path}: tensor {t.name} also appears in "
                                 f"{infos[t.name][0].path}")
            infos[t.name] = (f, t)
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

    F32 -> F32 is a byte copy; every other pair goes through float32 and back, as
    tools/convert_host.py does (so F16/BF16 NaNs come out in its canonical form)."""
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


def _config_output(cfg, st):
    conf = cfg.to_hf_dict()
    conf.pop("torch_dtype", None)
    conf["dtype"] = TORCH_NAME[st]
    text = (json.dumps(conf, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return _output("config.json", [_b64(text)], len(text))


async def plan(source, target, dtype=None, options=None, io=None):
    """The conversion plan (a JSON-able dict) for `source` -> `target` ("mbjs" | "hf")."""
    options = options or {}
    if dtype in ("", "keep"):
        dtype = None
    if dtype is not None and dtype not in ST_DTYPE:
        raise ValueError(f"dtype {dtype!r} is not one of f32, f16, bf16")
    if target == "mbjs":
        if source.kind == "mbjs":
            raise ValueError("This is already an MBJS file: choose HF safetensors as the "
                             "target (MBJS -> MBJS is not a conversion).")
        out = _hf_to_mbjs(source, dtype or "f32", bool(options.get("drop_untied_head")))
    elif target == "hf":
        out = (await _mbjs_to_hf(source, dtype, io) if source.kind == "mbjs"
               else _hf_to_hf(source, dtype))
    else:
        raise ValueError(f"target {target!r} is not one of 'mbjs', 'hf'")
    out["total"] = sum(o["size"] for o in out["outputs"])
    return out


def _hf_to_mbjs(source, dtype, drop_untied_head):
    cfg = source.cfg
    if cfg.is_falcon:
        raise ValueError(
            f"{source.base} is Falcon-Mamba: it applies a weightless RMSNorm to B, C and dt "
            f"(mixer_rms_eps {cfg.mixer_rms_eps}); MBJS has no way to say so and MBJS engines "
            "would silently compute a different model. Keep it in HF format: choose HF "
            "safetensors as the target.")
    if dtype == "bf16":
        raise ValueError("MBJS stores f32 (v2) or f16 (v3) data, not bf16: choose f32 or f16.")
    notes = []
    if not cfg.tie_word_embeddings:
        if not drop_untied_head:
            raise ValueError(
                f"{source.base} has an untied LM head (lm_head.weight differs from the "
                "embedding), but MBJS always ties the head to the embedding. Choose HF "
                "safetensors as the target to keep it, or tick \"drop the untied head\" to "
                "write MBJS without it (the MBJS model will then predict with the embedding "
                "matrix instead).")
        notes.append("dropped the untied lm_head.weight (MBJS ties the head to the embedding)")
    if abs(cfg.layer_norm_epsilon - 1e-5) > 1e-12:
        notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} is not stored in MBJS")
    version = 3 if dtype == "f16" else 2
    out_dt = MBJS_ST_DTYPE[dtype]
    width = DTYPE_SIZES[out_dt]
    entries = hf_names.mbjs_plan(cfg)
    numels = [_numel(mshape) for _, mshape, _, _, _ in entries]
    head = mbjs.build_header(numels, cfg.layers, version)
    ops = [_b64(head)]
    for (mname, mshape, hname, hshape, how), n in zip(entries, numels):
        if hshape is None:
            ops.append({"op": "zeros", "n": n * width, "label": mname})
            continue
        f, t = source.infos[hname]
        ops.append(_tensor_op(f, t.start, t.end, t.dtype, out_dt, hname,
                              flip=tuple(mshape) if how == "flip" else None))
    ops.append({"op": "crc_trailer"})
    size = len(head) + sum(numels) * width + mbjs.TRAILER_BYTES
    absent = sorted({h.split(".mixer.")[-1] for _, _, h, hs, _ in entries if hs is None})
    if absent:
        notes.append("wrote zeros for " + ", ".join(absent) + " (absent in HF, present in MBJS)")
    notes.append("reversed conv1d taps into MBJS order")
    name = f"{source.base}.bin"
    return {"outputs": [_output(name, ops, size)], "archive": None, "download": name,
            "notes": notes,
            "summary": f"HF {source.base} ({_describe(cfg)}, {'/'.join(source.dtypes)}) -> "
                       f"MBJS v{version} {dtype} {name} ({size} bytes, CRC trailer)"}


async def _mbjs_to_hf(source, dtype, io):
    cfg, lay = source.cfg, source.layout
    in_dt = MBJS_ST_DTYPE[lay.dtype]
    width = DTYPE_SIZES[in_dt]
    notes = list(source.notes)
    # Which of MBJS's bias tensors that HF lacks are nonzero? (JS reduces, Python decides.)
    absent = [(idx, e) for idx, e in enumerate(source.plan) if e[4] == "bias" and e[3] is None]
    ranges = [[lay.offsets[idx], lay.offsets[idx] + lay.numels[idx] * width] for idx, _ in absent]
    maxabs = list(await io.max_abs(source.file.id, ranges, in_dt)) if ranges else []
    bias_nonzero = {}
    for (idx, e), m in zip(absent, maxabs):
        if float(m):
            bias_nonzero.setdefault(e[2].split(".mixer.")[-1], (e[2], float(m)))
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
    ops_by_name = {}
    for idx, (mname, mshape, hname, hshape, how) in enumerate(source.plan):
        if hname not in want:
            continue
        start = lay.offsets[idx]
        end = start + lay.numels[idx] * width
        ops_by_name[hname] = _tensor_op(source.file, start, end, in_dt, st, hname,
                                        flip=tuple(mshape) if how == "flip" else None)
    dropped = sorted({e[2].split(".mixer.")[-1] for e in source.plan if e[2] not in want})
    items = []
    for n, shape in want.items():
        op = ops_by_name.get(n) or {"op": "zeros", "n": _numel(shape) * DTYPE_SIZES[st],
                                    "label": n}
        items.append((n, st, shape, op))
    outputs = [_safetensors_output("model.safetensors", items), _config_output(cfg, st)]
    if dropped:
        notes.append("dropped all-zero " + ", ".join(dropped) + " (HF config has no such bias)")
    notes.append("reversed conv taps into PyTorch conv1d order; head tied to the embedding")
    notes.append(f"layer_norm_epsilon {cfg.layer_norm_epsilon} (MBJS does not store it; "
                 "npm's engine uses 1e-6: set it on this page or drop a config.json with the "
                 "MBJS file to match)")
    folder = f"{source.base}-hf-{TORCH_NAME[st]}"
    return {"outputs": outputs, "archive": {"kind": "zip", "folder": folder},
            "download": folder + ".zip", "notes": notes,
            "summary": f"MBJS v{lay.version} {lay.dtype} {source.file.name} -> HF {folder} "
                       f"({_describe(cfg)}, {TORCH_NAME[st]}): "
                       + ", ".join(o["name"] for o in outputs)}


def _hf_to_hf(source, dtype):
    cfg = source.cfg
    if dtype:
        st = ST_DTYPE[dtype]
    elif len(source.dtypes) == 1:
        st = source.dtypes[0]
    else:
        raise ValueError(f"{source.base} mixes dtypes {source.dtypes}: choose an output dtype.")
    if st not in TORCH_NAME:
        raise ValueError(f"{source.base}: cannot write {st}; choose f32, f16 or bf16.")
    items = []
    for n, shape in hf_names.expected_tensors(cfg).items():
        f, t = source.infos[n]
        items.append((n, st, shape, _tensor_op(f, t.start, t.end, t.dtype, st, n)))
    outputs = [_safetensors_output("model.safetensors", items), _config_output(cfg, st)]
    notes = []
    for side in SIDE_FILES:
        for f in source.side_files:
            if f.name == side and f.folder == source.config_file.folder:
                outputs.append(_output(side, [{"op": "copy", "src": f.id, "start": 0,
                                               "end": f.size, "label": side}], f.size))
                notes.append(f"copied {side}")
    if len(source.files) > 1:
        notes.append(f"joined {len(source.files)} shards into one model.safetensors")
    folder = f"{source.base}-{TORCH_NAME[st]}"
    return {"outputs": outputs, "archive": {"kind": "zip", "folder": folder},
            "download": folder + ".zip", "notes": notes,
            "summary": f"HF {source.base} ({_describe(cfg)}, {'/'.join(source.dtypes)}, "
                       f"{len(source.files)} file(s)) -> HF {folder} ({TORCH_NAME[st]}): "
                       + ", ".join(o["name"] for o in outputs)}


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
    eps = (options or {}).get("layer_norm_epsilon")
    if eps not in (None, ""):
        try:
            hints["layer_norm_epsilon"] = float(eps)
        except (TypeError, ValueError):
            raise ValueError(f"layer norm epsilon {eps!r} is not a number") from None
    return hints


async def handle(request, io=None):
    """{"action": "inspect" | "plan", "files": [{id, path, size}], "target", "dtype",
    "options"} -> {"source": ...} / {"source": ..., "plan": ...}, or {"error": message}."""
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
        return {"error": str(e)}
