"""Export a model (HF safetensors + config.json + tokenizer.json, or MBJS v2) and save / load a
resumable training state, without pulling weights through Python when a browser is there.

A file is described as `parts`: [("bytes", b)] for what Python makes (headers, small
tensors) and [("gpu", tensor)] for a GPU tensor's f32 bytes. Two sinks turn parts into a file:
  parts_bytes(parts)          Python bytes (the CLI and tests: handed back through `result`)
  parts_blob / parts_opfs     assembled in the Worker's JS (js.mwTrain.writeParts): GPU ranges
                              go staging buffer -> Blob / OPFS file, never into Python's heap.

The training state is a safetensors file (so `safetensors` on a host reads it too):
  <HF name>                       F32 weights, exactly model.safetensors's tensors
  optimizer.exp_avg/<piece>       AdamW first moment of each trained GPU piece
  optimizer.exp_avg_sq/<piece>    second moment
  __metadata__  "format": "pt", "mambaweb.state": JSON {version, config (HF dict), step,
                 adam_t, skipped, train (hyper-parameters), data (position, corpus digest),
                 tokenizer (tokenizer.json text), history (thinned [step, loss] pairs), ...}
Pieces are GPU row blocks of HF tensors (py_engine/io/gpu_layout.py): an HF tensor's bytes are
its pieces' bytes back to back, so no tensor is ever reassembled.

Pure stdlib: this module is imported inside Pyodide.
"""
import json
import struct

from py_engine.io import gpu_layout, hf_names, mbjs
from py_engine.io.safetensors_format import build_header, parse_header, safetensors_order

STATE_KEY = "mambaweb.state"
STATE_VERSION = 1
M_PREFIX = "optimizer.exp_avg/"
V_PREFIX = "optimizer.exp_avg_sq/"


# --- parts -> files -----------------------------------------------------------------------

def _nbytes(part):
    kind, x = part
    return len(x) if kind == "bytes" else x.numel * 4


async def parts_bytes(parts, crc_trailer=False):
    out = []
    for kind, x in parts:
        out.append(bytes(x) if kind == "bytes" else await x.to_bytes())
    data = b"".join(out)
    if crc_trailer:
        data += mbjs.build_trailer(mbjs.crc32(data))
    return data


def _js_parts(parts):
    from pyodide.ffi import to_js
    out = []
    for kind, x in parts:
        if kind == "bytes":
            out.append([0, to_js(memoryview(bytes(x)))])
        else:
            out.append([1, x.buffer.js, x.offset, x.numel * 4])
    return to_js(out)


def _js_opts(**kw):
    import js
    from pyodide.ffi import to_js
    return to_js(kw, dict_converter=js.Object.fromEntries)


async def parts_blob(device, parts, crc_trailer=False, mime="application/octet-stream"):
    """A JS Blob of the file (assembled in the Worker; Python sees only the handle)."""
    import js
    res = await js.mwTrain.writeParts(device.js, _js_parts(parts),
                                      _js_opts(crc=bool(crc_trailer), type=mime))
    return res.blob


async def parts_opfs(device, parts, path, crc_trailer=False):
    """Write the file to the origin-private file system at `path` ("dir/name")."""
    import js
    res = await js.mwTrain.writeParts(device.js, _js_parts(parts),
                                      _js_opts(crc=bool(crc_trailer), opfs=path))
    return int(res.size)


# --- HF export ----------------------------------------------------------------------------

def hf_tensor_parts(model):
    """{HF name: (shape, [GPU piece tensors in row order])} of the model's weights (a piece
    held as row blocks, py_engine/gpu/row_chunks.py, gives its blocks)."""
    from py_engine.gpu.row_chunks import flat
    cfg = model.cfg
    out = {}
    for name, shape in hf_names.expected_tensors(cfg).items():
        pieces = flat(model.weights[p] for p, _, _, _ in gpu_layout.pieces(cfg, name, shape))
        out[name] = (tuple(shape), pieces)
    return out


def safetensors_parts(tensors, metadata=None):
    """tensors: {name: (shape, [("gpu", t) | ("bytes", b) parts])} -> file parts (F32)."""
    entries = safetensors_order([(n, "F32", s) for n, (s, _) in tensors.items()])
    head, infos = build_header(entries, metadata)
    parts = [("bytes", head)]
    for info in infos:
        _, sub = tensors[info.name]
        if sum(_nbytes(p) for p in sub) != info.nbytes:
            raise ValueError(f"tensor {info.name}: parts hold {sum(_nbytes(p) for p in sub)} "
                             f"bytes, header says {info.nbytes}")
        parts.extend(sub)
    return parts


def model_safetensors_parts(model):
    """The model as one HF safetensors file that transformers loads (a tied NemotronH carries
    its head explicitly: transformers 5.x does not tie it)."""
    from py_engine.io.layouts import external_name, writes_tied_head
    tensors = {n: (s, [("gpu", t) for t in pcs]) for n, (s, pcs) in hf_tensor_parts(model).items()}
    cfg = model.cfg
    if cfg.tie_word_embeddings and writes_tied_head(cfg.model_type, cfg):
        tensors[hf_names.LM_HEAD] = tensors[hf_names.EMBED]
    tensors = {external_name(cfg.model_type, n, cfg): v for n, v in tensors.items()}
    return safetensors_parts(tensors, {"format": "pt"})


def config_json(cfg, tokenizer=None):
    d = cfg.to_hf_dict()
    if "model_type" not in d:
        # mamba_ssm's config.json: its MambaConfig is a dataclass that MambaLMHeadModel.
        # from_pretrained builds with MambaConfig(**json), so any key beyond its fields (dtype,
        # token ids, ...) would make the file unloadable there; the tokenizer carries the ids
        return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode("utf-8")
    d.setdefault("dtype", "float32")
    # rescale_prenorm_residual is an initialisation choice (out_proj / sqrt(n_layer)), done
    # long ago for a trained model; transformers 5.23's MambaPreTrainedModel._init_weights
    # divides out_proj by sqrt(n_layer) again on from_pretrained when it is true (an in-place
    # `p /=` its loaded-weight guard does not catch), so exported configs say false.
    d["rescale_prenorm_residual"] = False
    eos = getattr(tokenizer, "eos_id", None) if tokenizer is not None else None
    if eos is not None:
        d.setdefault("eos_token_id", eos)
        d.setdefault("bos_token_id", eos)
        d.setdefault("pad_token_id", eos)
    return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode("utf-8")


def hf_files(model, tokenizer=None):
    """{file name: parts} of an HF model folder (config.json, model.safetensors,
    tokenizer.json when a tokenizer is given)."""
    files = {"config.json": [("bytes", config_json(model.cfg, tokenizer))],
             "model.safetensors": model_safetensors_parts(model)}
    if tokenizer is not None:
        files["tokenizer.json"] = [("bytes", tokenizer.to_json().encode("utf-8"))]
    return files


# --- MBJS v2 export -------------------------------------------------------------------------

async def mbjs_parts(model):
    """Parts of an MBJS v2 file (f32; add the CRC trailer when writing). Conv taps are
    reversed for MBJS (a small read of the conv weights); absent biases are zeros."""
    cfg = model.cfg
    if not cfg.tie_word_embeddings:
        raise ValueError("MBJS always ties the LM head to the embedding, and this model has a "
                         "separate lm_head: download the HF safetensors instead")
    if cfg.is_falcon:
        raise ValueError("MBJS has no Falcon-Mamba layers: download the HF safetensors instead")
    hf = hf_tensor_parts(model)
    plan = hf_names.mbjs_plan(cfg)
    numels = [_prod(mshape) for _, mshape, _, _, _ in plan]
    parts = [("bytes", mbjs.build_header(numels, mbjs.layer_type_names(cfg), version=2))]
    for entry in plan:
        mname, mshape, hname, hshape, how = entry
        if hshape is None:                       # bias the HF model does not have
            parts.append(("bytes", bytes(4 * _prod(mshape))))
        elif how == "rows":                      # npm attention wQKV / bQKV: q | k | v rows
            for part, _, _, _ in hf_names.mbjs_parts(entry):
                parts.extend(("gpu", t) for t in hf[part][1])
        elif how == "flip":
            I, K = mshape
            (t,) = hf[hname][1]
            raw = await t.to_bytes()
            vals = struct.unpack(f"<{I * K}f", raw)
            flipped = [vals[c * K + K - 1 - k] for c in range(I) for k in range(K)]
            parts.append(("bytes", struct.pack(f"<{I * K}f", *flipped)))
        else:
            parts.extend(("gpu", t) for t in hf[hname][1])
    return parts


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# --- training state -------------------------------------------------------------------------

def state_parts(trainer, meta):
    """Parts of a resumable state: weights (HF names), AdamW moments (piece names), `meta`
    (JSON-able dict, stored under __metadata__["mambaweb.state"])."""
    model = trainer.model
    tensors = {n: (s, [("gpu", t) for t in pcs]) for n, (s, pcs) in hf_tensor_parts(model).items()}
    tensors.update(moment_parts(trainer.opt))
    meta = dict(meta, version=STATE_VERSION)
    return safetensors_parts(tensors, {"format": "pt", STATE_KEY: json.dumps(meta)})


def moment_parts(opt):
    """{optimizer.exp_avg[_sq]/<piece>: (shape, parts)} of AdamW `opt`; the moments of a piece
    trained as row blocks (Trainer.blocks, kept as opt.blocks) are stored whole, in row order,
    so the file does not depend on the GPU's binding limit."""
    blocks = getattr(opt, "blocks", None) or {}
    grouped = {}
    for name, m in opt.m.items():
        piece, r0, _ = blocks.get(name, (name, 0, 0))
        grouped.setdefault(piece, []).append((r0, m, opt.v[name]))
    out = {}
    for piece, items in grouped.items():
        items.sort(key=lambda e: e[0])
        shape = (sum(m.shape[0] for _, m, _ in items),) + tuple(items[0][1].shape[1:])
        out[M_PREFIX + piece] = (shape, [("gpu", m) for _, m, _ in items])
        out[V_PREFIX + piece] = (shape, [("gpu", v) for _, _, v in items])
    return out


class StateFile:
    """A parsed training-state header + a reader of its byte ranges.

    read(start, end) -> awaitable of bytes-like or a JS ArrayBuffer/Uint8Array (what
    device.write accepts)."""

    def __init__(self, header, meta, read):
        self.header, self.meta, self.read = header, meta, read
        self.tensors = header.by_name()

    @classmethod
    async def open(cls, read, size, where="training state"):
        if size < 8:
            raise ValueError(f"{where} is {size} bytes: not a mambaweb training state")
        first = _py_bytes(await read(0, 8))
        (n,) = struct.unpack("<Q", first)
        if n > 100_000_000 or 8 + n > size:
            raise ValueError(f"{where} is not a mambaweb training state (not a safetensors file)")
        prefix = first + _py_bytes(await read(8, 8 + n))
        header = parse_header(prefix, size, where)
        raw = header.metadata.get(STATE_KEY)
        if raw is None:
            raise ValueError(f"{where} is a safetensors file but not a mambaweb training state "
                             "(no 'mambaweb.state' metadata): choose the training-state file "
                             "the pretrain page or `mambaweb pretrain` saved")
        meta = json.loads(raw)
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: training state version {meta.get('version')} is not "
                             f"supported (this engine reads version {STATE_VERSION})")
        return cls(header, meta, read)

    @classmethod
    async def from_bytes(cls, data, where="training state"):
        mv = memoryview(data)

        async def read(a, b):
            return mv[a:b]
        return await cls.open(read, len(data), where)

    @classmethod
    async def from_blob(cls, blob, where="training state"):
        import js

        async def read(a, b):
            return await js.mwTrain.blobBytes(blob, a, b)
        return await cls.open(read, int(blob.size), where)

    async def write_tensor(self, device, name, rows, tensor):
        """Write rows [r0, r1) of stored tensor `name` into GPU `tensor`."""
        info = self.tensors.get(name)
        if info is None:
            raise ValueError(f"training state has no tensor {name}")
        if info.dtype != "F32":
            raise ValueError(f"training state tensor {name} is {info.dtype}, expected F32")
        r0, r1 = rows
        row = info.nbytes // info.shape[0] if info.shape else info.nbytes
        a, b = info.start + r0 * row, info.start + r1 * row
        if b - a != tensor.numel * 4:
            raise ValueError(f"training state tensor {name} rows {r0}:{r1} hold {b - a} bytes, "
                             f"the model needs {tensor.numel * 4}")
        device.write(tensor.buffer, await self.read(a, b), tensor.offset)

    async def load_weights(self, device, cfg):
        """{piece: Tensor} of the stored weights (released again on any error); a piece larger
        than one GPU binding is held as row blocks (py_engine/gpu/row_chunks.py)."""
        from py_engine.gpu.row_chunks import RowChunks, binding_limit, limit_phrase
        from py_engine.gpu.tensor import Tensor
        hf_names.check_tensors(cfg, {n: t.shape for n, t in self.tensors.items()
                                     if not n.startswith(("optimizer.",))}, "training state")
        expected = hf_names.expected_tensors(cfg)
        blocks = gpu_layout.plan_blocks(cfg, expected, binding_limit(device),
                                        limit_phrase(device))
        weights = {}
        try:
            for name, shape in expected.items():
                for piece, r0, r1, pshape in gpu_layout.pieces(cfg, name, shape):
                    if piece in blocks:
                        parts = []
                        for b0, b1 in blocks[piece]:
                            t = Tensor(device, (b1 - b0,) + tuple(pshape[1:]))
                            parts.append((b0, b1, t))
                            weights[f"{piece}#rows{b0}"] = t       # released on error
                            await self.write_tensor(device, name, (r0 + b0, r0 + b1), t)
                        for b0, _, _ in parts:
                            del weights[f"{piece}#rows{b0}"]
                        weights[piece] = RowChunks(device, pshape, parts, piece)
                        continue
                    t = Tensor(device, pshape)
                    weights[piece] = t
                    await self.write_tensor(device, name, (r0, r1), t)
        except BaseException:
            for t in weights.values():
                t.release()
            raise
        return weights

    async def load_moments(self, device, opt):
        blocks = getattr(opt, "blocks", None) or {}
        for name, m in opt.m.items():
            piece, r0, r1 = blocks.get(name, (name, 0, None))    # row blocks: their rows
            for prefix, t in ((M_PREFIX, m), (V_PREFIX, opt.v[name])):
                info = self.tensors.get(prefix + piece)
                if info is None:
                    raise ValueError(f"training state has no optimizer moment for {piece} (was "
                                     "it saved with a different WSLA setting?)")
                await self.write_tensor(device, prefix + piece,
                                        (r0, info.shape[0] if r1 is None else r1), t)


def _py_bytes(x):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    return x.to_bytes()   # a JS typed array / ArrayBuffer


def thin_history(history, limit=2000):
    """Keep at most `limit` [step, loss] points, dropping every other old one as it grows."""
    if len(history) <= limit:
        return history
    keep = history[-limit // 2:]
    old = history[:-limit // 2][::2]
    return old + keep
