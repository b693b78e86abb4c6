"""Load an HF Mamba checkpoint into GPU tensors, streaming byte ranges from a byte source.

  config.json -> MambaConfig
  model.safetensors (or the shards named by model.safetensors.index.json):
     the size, the 8-byte length and the JSON header (parsed here), then every tensor's
     byte range in chunks of up to CHUNK bytes, written straight into GPU buffers.
     F32 lands in its tensor directly; BF16/F16 land in a staging buffer and a WGSL kernel
     widens them (exactly) to f32.
Errors name the file and tensor; on any error every GPU tensor made so far is released.

read_plan(source) reads only config.json and the headers: what the model holds and what each
weight format would take on the GPU (the generate page shows it before loading).

Where the bytes come from is pluggable (py_engine.io.byte_sources):
  load_hf_model(device, base_url)          browser: HTTP Range + mwGpu.fetchRangeToBuffers
  load_hf_model_local(device, folder)      native: local files + device.write per piece
"""
import time

from py_engine.gpu.errors import GPUOutOfMemory, out_of_memory
from py_engine.gpu.row_chunks import RowChunks
from py_engine.gpu.tensor import Tensor
from py_engine.io import gpu_layout
from py_engine.io.hf_names import check_tensors, expected_tensors
from py_engine.io.weight_formats import narrow_weights
from py_engine.io.safetensors_format import header_length, parse_header, parse_index
from py_engine.models.config import MambaConfig
from py_engine.ops._common import fold, params
from py_engine.models.packing import pack_model

CHUNK = 16 * 2**20
ITEM = {"F32": 4, "F16": 2, "BF16": 2}
WIDEN = {"F16": "f16_to_f32_forward", "BF16": "bf16_to_f32_forward"}


# Names other layouts use (mamba_ssm's `backbone.embedding`, `model.`-prefixed state dicts):
# py_engine/io/layouts.py maps them onto the engine's names.
from py_engine.io.layouts import internal_name  # noqa: E402


async def _weight_files(source):
    """[(file, kind)]: safetensors (single or sharded by an index) or PyTorch .bin files."""
    if await source.exists("model.safetensors.index.json"):
        text = (await source.read("model.safetensors.index.json")).decode("utf-8")
        return [(f, "st") for f in sorted(set(parse_index(text).values()))]
    if await source.exists("model.safetensors"):
        return [("model.safetensors", "st")]
    if await source.exists("pytorch_model.bin.index.json"):
        text = (await source.read("pytorch_model.bin.index.json")).decode("utf-8")
        return [(f, "bin") for f in sorted(set(parse_index(text).values()))]
    if await source.exists("pytorch_model.bin"):
        return [("pytorch_model.bin", "bin")]
    return [("model.safetensors", "st")]   # reading it raises the "missing file" message


async def _file_tensors(source, f, kind):
    if kind == "bin":
        from py_engine.io.torch_bin import read_bin_header
        return await read_bin_header(source, f)
    size = await source.size(f)
    n = header_length(await source.read(f, 0, min(size, 8)), size, f)
    return parse_header(await source.read(f, 0, 8 + n), size, f).tensors


async def read_headers(source, cfg=None):
    """{tensor name: (file, TensorInfo)} over all shards, headers only. `source` is a byte
    source or (as before) a base URL. Names of other layouts are mapped (layouts.internal_name;
    `cfg` for the layouts whose names depend on the config: mamba_ssm hybrids)."""
    import dataclasses
    source = _as_source(source)
    out = {}
    for f, kind in await _weight_files(source):
        for t in await _file_tensors(source, f, kind):
            if internal_name(t.name, cfg) != t.name:
                t = dataclasses.replace(t, name=internal_name(t.name, cfg))
            if t.name in out:
                raise ValueError(f"{f}: tensor {t.name!r} is also in {out[t.name][0]}")
            if t.dtype not in ITEM and kind == "bin" and t.dtype[0] in "IUB":
                continue   # integer buffers of a torch state dict (position ids, counters)
            if t.dtype not in ITEM:
                raise ValueError(f"{f}: tensor {t.name!r} has dtype {t.dtype}; this loader "
                                 "reads F32, F16 and BF16")
            out[t.name] = (f, t)
    return out


async def load_model(device, base_url, progress=None, weights_format="f32"):
    """A MambaModel read over HTTP from an HF (or mamba_ssm) checkpoint folder URL."""
    from py_engine.models.mamba import MambaModel
    cfg, weights = await load_hf_model(device, base_url, progress, weights_format)
    return MambaModel(device, cfg, weights)


async def load_model_local(device, folder, progress=None, weights_format="f32"):
    """A MambaModel read from a local checkpoint folder (native backend, CLI, tests)."""
    from py_engine.models.mamba import MambaModel
    cfg, weights = await load_hf_model_local(device, folder, progress, weights_format)
    return MambaModel(device, cfg, weights)


async def load_hf_model(device, base_url, progress=None, weights_format="f32"):
    """Returns (cfg, {piece name: Tensor f32}) read over HTTP (the browser path).
    `progress(dict)` is called per chunk."""
    from py_engine.io.byte_sources import HttpSource
    return await load_from_source(device, HttpSource(base_url), progress, weights_format)


async def load_hf_model_local(device, folder, progress=None, weights_format="f32"):
    """Returns (cfg, {piece name: Tensor f32}) read from a local folder (the native path)."""
    from py_engine.io.byte_sources import LocalSource
    return await load_from_source(device, LocalSource(folder), progress, weights_format)


async def load_from_source(device, source, progress=None, weights_format="f32", report=None,
                           on_plan=None):
    """(cfg, weights) from any byte source; weights_format f16/bf16/q8/q4 stores the matrices
    narrow (py_engine/io/weight_formats.py), converting each chunk as it arrives so the f32
    copy of the whole model never exists at once. A format the device cannot run is refused
    before any byte is read. `report` (a dict) receives what was read: weight_files,
    file_dtypes (the checkpoint's dtypes), weight_bytes and gpu_bytes_by_format, for a model
    card; `on_plan(report)` is called with it once the headers are read, before any weight.

    A piece larger than one GPU binding (the embedding of a 50k vocabulary on a 128 MiB-binding
    GPU) is held as row blocks (py_engine/gpu/row_chunks.py); what cannot fit at all is refused
    here, by name and with the numbers, before any weight byte is read."""
    from py_engine.io.weight_formats import check_device_format, gpu_bytes_by_format
    from py_engine.gpu.row_chunks import binding_limit, limit_phrase
    check_device_format(device, weights_format)
    cfg, infos, plan = await read_plan(source)
    wanted = expected_tensors(cfg)
    shapes = {name: t.shape for name, (_, t) in infos.items() if name in wanted}
    blocks = gpu_layout.plan_blocks(cfg, shapes, binding_limit(device), limit_phrase(device))
    if blocks:       # each block is padded on its own in the packed formats
        plan = dict(plan, gpu_bytes_by_format=gpu_bytes_by_format(cfg, shapes, blocks))
    if report is not None:
        report.update(plan)
    if on_plan is not None:
        on_plan(plan)
    weights = {}
    need = plan["gpu_bytes_by_format"].get(weights_format)
    what = f"loading the weights of {source.where('')}" + (
        f" ({need / 1e6:.1f} MB on the GPU as {weights_format})" if need else "")
    device.open_allocation_scope()     # a browser reports out-of-memory late: one check at the end
    try:
        try:
            await _stream(device, source, cfg, {k: v for k, v in infos.items() if k in wanted},
                          weights, progress, weights_format, blocks)
            pack_model(device, cfg, weights)     # inside the scope: it allocates
        except BaseException:
            # an out-of-memory explains whatever failed after it; other scoped errors do not
            problem = await device.close_allocation_scope(what)
            if isinstance(problem, GPUOutOfMemory):
                raise problem
            raise
        problem = await device.close_allocation_scope(what)
        if problem is not None:
            raise problem
    except BaseException as e:
        for t in weights.values():
            t.release()
        if isinstance(e, GPUOutOfMemory):
            # the pool now holds what this load took, maybe a buffer the GPU never made:
            # give it all back so a smaller model or format can load next
            device.empty_pool()
            said = out_of_memory(what)
            if str(e) != str(said):     # raised at one allocation: say which load it broke
                raise said from e
        raise
    return cfg, weights


async def read_plan(source):
    """(cfg, {name: (file, TensorInfo)}, plan) from config.json and the weight headers only:
    plan = {weight_files, file_dtypes, weight_bytes, gpu_bytes_by_format} of the tensors the
    model uses (what each weight format would take on the GPU, before loading)."""
    import json
    from py_engine.io.weight_formats import gpu_bytes_by_format
    raw = await source.read("config.json")
    try:
        cfg_dict = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise source.error("config.json", f"not valid JSON ({e})") from None
    cfg = MambaConfig.from_hf_dict(cfg_dict, source=source.where("config.json"))
    infos = await read_headers(source, cfg)
    check_tensors(cfg, [t for _, t in infos.values()], source.where(""))
    wanted = expected_tensors(cfg)
    used = [(f, t) for name, (f, t) in infos.items() if name in wanted]
    plan = {"weight_files": sorted({f for f, _ in used}),
            "file_dtypes": sorted({t.dtype for _, t in used}),
            "weight_bytes": sum(t.nbytes for _, t in used),
            "gpu_bytes_by_format": gpu_bytes_by_format(
                cfg, {name: t.shape for name, (_, t) in infos.items() if name in wanted})}
    return cfg, infos, plan


def _as_source(source):
    if isinstance(source, str):
        from py_engine.io.byte_sources import HttpSource
        return HttpSource(source)
    return source


async def _stream(device, source, cfg, infos, weights, progress, weights_format="f32",
                  blocks=None):
    # Plan: per file, tensors in file order, grouped into chunks of contiguous ranges.
    by_file = {}
    for name, (f, t) in infos.items():
        by_file.setdefault(f, []).append(t)
    total = sum(t.nbytes for _, t in infos.values())
    done_bytes, done_tensors, t0 = 0, 0, time.perf_counter()
    for f, tensors in sorted(by_file.items()):
        tensors.sort(key=lambda t: t.start)
        chunk = []
        for t in tensors + [None]:
            if t is not None and (not chunk or max(t.end, max(c.end for c in chunk))
                                  - chunk[0].start <= CHUNK):
                chunk.append(t)
                continue
            if chunk:
                names = await _load_chunk(device, source, f, cfg, chunk, weights, blocks or {})
                narrow_weights(device, cfg, weights, weights_format, names)
                done_bytes += max(t.end for t in chunk) - chunk[0].start
                done_tensors += len(chunk)
                if progress:
                    secs = max(time.perf_counter() - t0, 1e-6)
                    progress({"bytes": done_bytes, "total_bytes": total, "tensors": done_tensors,
                              "total_tensors": len(infos), "mb_per_s": done_bytes / secs / 1e6})
            chunk = [t] if t is not None else []


async def _load_chunk(device, source, f, cfg, chunk, weights, blocks):
    """Read one chunk's tensors into new GPU tensors in `weights`; returns their piece names.
    Staging buffers are released even when the read fails (nothing half-allocated is left).
    A piece named in `blocks` lands as row blocks (RowChunks), one target per block."""
    staged = []      # (dtype, raw u32 staging tensor, f32 destination): released here
    try:
        return await _fill_chunk(device, source, f, cfg, chunk, weights, staged, blocks)
    finally:
        for _, raw, _ in staged:
            raw.release()   # queue order makes reuse by a later chunk's write safe


async def _fill_chunk(device, source, f, cfg, chunk, weights, staged, blocks):
    # max: in a torch .bin a view may start after its base tensor yet end before it
    start, end = chunk[0].start, max(t.end for t in chunk)
    targets, names = [], []
    for t in chunk:
        row_bytes = t.nbytes // t.shape[0] if t.shape else t.nbytes
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, t.name, t.shape):
            if piece in blocks:
                parts = []
                try:
                    for b0, b1 in blocks[piece]:
                        parts.append((b0, b1, Tensor(device, (b1 - b0,) + tuple(shape[1:]))))
                except BaseException:
                    for _, _, made in parts:
                        made.release()
                    raise
                weights[piece] = RowChunks(device, shape, parts, piece)
                dsts = [(r0 + b0, r0 + b1, dst) for b0, b1, dst in parts]
            else:
                dst = Tensor(device, shape)
                weights[piece] = dst
                dsts = [(r0, r1, dst)]
            names.append(piece)
            for q0, q1, dst in dsts:
                a = t.start - start + q0 * row_bytes
                b = t.start - start + q1 * row_bytes
                if t.dtype == "F32":
                    targets.append((dst.buffer, dst.offset, a, b))
                else:
                    raw = Tensor(device, ((b - a + 3) // 4,), "u32")
                    staged.append((t.dtype, raw, dst))
                    targets.append((raw.buffer, raw.offset, a, b))
    await source.read_to_buffers(device, f, start, end, targets)
    if staged:
        batch = device.batch()
        for dtype, raw, dst in staged:
            n = dst.numel
            gx, gy = fold(-(-n // 256))
            batch.run("convert", WIDEN[dtype], [device.uniform(params(n, 0, 0, 0)),
                                                raw.binding, dst.binding], gx, gy)
        batch.submit()
    return names
