"""Mamba-3 scan, the two forward forms side by side (py_engine/ops/mamba3.py): the sequential scan
(O(T) dependent steps per (sequence, head)) and the chunked one (O(T / L)), at the 187m-class head
shape (24 heads of 64, d_state 128, half of it rotated), SISO (L = 8) and MIMO of rank 2 and 4
(L = 4, 2: chunks of L R = 8 (token, rank) rows). Timed with the host clock around submit + queue
drain, each form warmed up first; `max_abs_diff` is |chunked - serial| over y (pseudo-random inputs
from a cheap integer hash, written once).

Result: {"shape", "chunk_len", "lengths": [rows]} for SISO, and "mimo": [{"R", "chunk_len",
"lengths": [rows]}] per MIMO rank; a row is {"T", "serial_ms", "chunked_ms", "speedup",
"max_abs_diff", "y_scale"}."""
import math
import struct

from py_engine.benchmarks.timing import seconds_per_call
from py_engine.gpu.tensor import Tensor
from py_engine.ops import mamba3 as m3

SHAPE = dict(H=24, P=64, N=128, S=32, G=1)
LENGTHS = (64, 256, 1024)
RANKS = (1, 2, 4)          # SISO, then MIMO ranks


def _values(n, seed, scale):
    """n floats in [-scale, scale): a fixed hash, so both forms see the same inputs."""
    out = []
    for i in range(n):
        h = (i * 2654435761 + seed * 40503) & 0xFFFFFFFF
        h ^= h >> 15
        h = (h * 2246822519) & 0xFFFFFFFF
        out.append(scale * ((h & 0xFFFF) / 32768.0 - 1.0))
    return struct.pack(f"<{n}f", *out)


def _tensor(device, shape, seed, scale=1.0):
    return Tensor.from_bytes(device, shape, _values(math.prod(shape), seed, scale), "f32")


async def _rank(device, s, R, lengths, min_seconds):
    """{"R", "chunk_len", "lengths"} of one rank (R = 1: SISO, no mimo_x)."""
    H, P, N, S, G = s["H"], s["P"], s["N"], s["S"], s["G"]
    mimo = R > 1
    bias = (H, R, N) if mimo else (H, N)
    par = dict(dt_bias=_tensor(device, (H,), 1, 0.5), D=_tensor(device, (H,), 2),
               B_bias=_tensor(device, bias, 3, 0.5), C_bias=_tensor(device, bias, 4, 0.5))
    if mimo:
        par["mimo_x"] = _tensor(device, (H, R, P), 5, 0.5)
    out = {"R": R, "chunk_len": m3.forward_chunk_len(device, N, S, R), "lengths": []}
    for T in lengths:
        ins = [_tensor(device, (1, T, w), 10 + i, sc) for i, (w, sc) in enumerate(
            ((H * P, 1.0), (R * G * N, 1.0), (R * G * N, 1.0), (H, 1.0), (H, 1.0), (H, 1.0),
             (S, 1.0)))]
        kw = dict(par, n_heads=H, n_groups=G, S=S, A_floor=1e-4, heavy_tail=True)
        ys = {}

        def form(path):
            def go(b):
                y, _ = m3.mamba3_forward(b, *ins, path=path, **kw)
                old = ys.pop(path, None)
                if old is not None:
                    old.release()
                ys[path] = y
            return go
        row = {"T": T}
        for path in ("serial", "chunked"):
            sec, _ = await seconds_per_call(device, form(path), min_seconds, 64)
            row[f"{path}_ms"] = round(1000.0 * sec, 3)
        row["speedup"] = round(row["serial_ms"] / max(row["chunked_ms"], 1e-9), 2)
        n = T * R * H * P
        a = struct.unpack(f"<{n}f", await ys["serial"].to_bytes())
        c = struct.unpack(f"<{n}f", await ys["chunked"].to_bytes())
        row["max_abs_diff"] = max(abs(u - v) for u, v in zip(a, c))
        row["y_scale"] = max(abs(u) for u in a)
        out["lengths"].append(row)
        for t in list(ins) + list(ys.values()):
            t.release()
    for t in par.values():
        t.release()
    return out


async def run(device, lengths=LENGTHS, min_seconds=0.3, shape=None, ranks=RANKS):
    """ranks: 1 (SISO) and/or MIMO ranks whose chunk fits (others are left out)."""
    s = dict(SHAPE, **(shape or {}))
    out = {"shape": s, "chunk_len": None, "lengths": [], "mimo": []}
    for R in ranks:
        if not m3.forward_chunk_len(device, s["N"], s["S"], R):
            continue
        r = await _rank(device, s, R, lengths, min_seconds)
        if R == 1:
            out.update(chunk_len=r["chunk_len"], lengths=r["lengths"])
        else:
            out["mimo"].append(r)
    return out
