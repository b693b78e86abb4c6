"""Load an HF Mamba checkpoint from the server into GPU tensors, streaming byte ranges.

  config.json -> MambaConfig
  model.safetensors (or the shards named by model.safetensors.index.json):
     HEAD for the size, Range for the 8-byte length and the JSON header (parsed here),
     then every tensor's byte range: fetch(Range) -> ArrayBuffer -> writeBuffer, in chunks
     of up to CHUNK bytes. F32 lands in its tensor directly; BF16/F16 land in a staging
     buffer and a WGSL kernel widens them (exactly) to f32.
Errors name the file and tensor; on any error every GPU tensor made so far is released.
"""
import time

import js

from py_engine.gpu.tensor import Tensor
from py_engine.io import gpu_layout
from py_engine.io.hf_names import check_tensors, expected_tensors
from py_engine.io.http import exists, fetch_bytes, fetch_json, file_size
from py_engine.io.safetensors_format import header_length, parse_header, parse_index
from py_engine.models.config import MambaConfig
from py_engine.ops._common import fold, params

CHUNK = 16 * 2**20
ITEM = {"F32": 4, "F16": 2, "BF16": 2}
WIDEN = {"F16": "f16_to_f32_forward", "BF16": "bf16_to_f32_forward"}


async def read_headers(base_url):
    """{tensor name: (file, TensorInfo)} over all shards, headers only."""
    files = ["model.safetensors"]
    if await exists(base_url + "model.safetensors.index.json"):
        text = (await fetch_bytes(base_url + "model.safetensors.index.json")).decode("utf-8")
        files = sorted(set(parse_index(text).values()))
    out = {}
    for f in files:
        url = base_url + f
        size = await file_size(url)
        n = header_length(await fetch_bytes(url, 0, min(size, 8)), size, f)
        header = parse_header(await fetch_bytes(url, 0, 8 + n), size, f)
        for t in header.tensors:
            if t.name in out:
                raise ValueError(f"{f}: tensor {t.name!r} is also in {out[t.name][0]}")
            if t.dtype not in ITEM:
                raise ValueError(f"{f}: tensor {t.name!r} has dtype {t.dtype}; this loader "
                                 "reads F32, F16 and BF16")
            out[t.name] = (f, t)
    return out


async def load_hf_model(device, base_url, progress=None):
    """Returns (cfg, {piece name: Tensor f32}). `progress(dict)` is called per chunk."""
    cfg = MambaConfig.from_hf_dict(await fetch_json(base_url + "config.json"),
                                   source=base_url + "config.json")
    infos = await read_headers(base_url)
    check_tensors(cfg, [t for _, t in infos.values()], base_url)
    wanted = expected_tensors(cfg)
    weights = {}
    try:
        await _stream(device, base_url, cfg, {k: v for k, v in infos.items() if k in wanted},
                      weights, progress)
    except BaseException:
        for t in weights.values():
            t.release()
        raise
    return cfg, weights


async def _stream(device, base_url, cfg, infos, weights, progress):
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
            if t is not None and (not chunk or t.end - chunk[0].start <= CHUNK):
                chunk.append(t)
                continue
            if chunk:
                await _load_chunk(device, base_url + f, cfg, chunk, weights)
                done_bytes += chunk[-1].end - chunk[0].start
                done_tensors += len(chunk)
                if progress:
                    secs = max(time.perf_counter() - t0, 1e-6)
                    progress({"bytes": done_bytes, "total_bytes": total, "tensors": done_tensors,
                              "total_tensors": len(infos), "mb_per_s": done_bytes / secs / 1e6})
            chunk = [t] if t is not None else []


async def _load_chunk(device, url, cfg, chunk, weights):
    start, end = chunk[0].start, chunk[-1].end
    targets, staged = [], []
    for t in chunk:
        row_bytes = t.nbytes // t.shape[0] if t.shape else t.nbytes
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, t.name, t.shape):
            dst = Tensor(device, shape)
            weights[piece] = dst
            a = t.start - start + r0 * row_bytes
            b = t.start - start + r1 * row_bytes
            if t.dtype == "F32":
                targets.append([dst.buffer.js, dst.offset, a, b])
            else:
                raw = Tensor(device, ((b - a + 3) // 4,), "u32")
                targets.append([raw.buffer.js, raw.offset, a, b])
                staged.append((t.dtype, raw, dst))
    await js.mwGpu.fetchRangeToBuffers(device.js, url, start, end, _to_js(targets))
    if staged:
        batch = device.batch()
        for dtype, raw, dst in staged:
            n = dst.numel
            gx, gy = fold(-(-n // 256))
            batch.run("convert", WIDEN[dtype], [device.uniform(params(n, 0, 0, 0)),
                                                raw.binding, dst.binding], gx, gy)
        batch.submit()
        for _, raw, _ in staged:
            raw.release()   # queue order makes reuse by a later chunk's writeBuffer safe


def _to_js(obj):
    from pyodide.ffi import to_js
    return to_js(obj)
