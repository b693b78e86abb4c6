"""Where Mamba-3's chunks-side-by-side forward spends its time, by ablation (native backend): one
`ops/mamba3.mamba3_forward` call (path "parallel") at mamba3-187m's head shape (24 heads of 64,
d_state 128, 32 angles, SISO) timed alone -- many calls in one submit, the wall time of the
submit to a readback less that of a shorter run, so no host time counts -- with parts of
shaders/mamba3_chunked.wgsl and lib/mamba3_chunk_common.wgsl removed (results wrong on purpose,
timing only), whole kernels skipped, the in-order chunk scan and the register-tiled kernels
(ops/mamba3_tiles, at 32 / 16 / 8-token chunks and in small blocks) beside it, all in one process.

  python -m tools.ablate_mamba3 [T] [--dawn] [--quick]   # default 1024 tokens, wgpu-py

Prints one JSON line per variant: us per forward call (prep, angle walk, delta, carry, out).
"""
import argparse
import json
import sys

SNIPPET = r"""
import sys
import struct
import time
import py_engine.ops.mamba3 as m3
from py_engine.benchmarks.mamba3_scan import _tensor
from py_engine.gpu import shaders as S
T, H, P, N, NS = args['T'], 24, 64, 128, 32
seed = iter(range(100, 200))
def tensor(shape, scale=1.0):      # fixed pseudo-random values, no numpy (Pyodide has none)
    return _tensor(device, shape, next(seed), scale)
ins = [tensor((1, T, w), sc) for w, sc in ((H * P, 1.0), (N, 0.5), (N, 0.5), (H, 0.5), (H, 0.5),
                                          (H, 0.5), (NS, 0.5))]
kw = dict(dt_bias=tensor((H,), 0.5), D=tensor((H,)), B_bias=tensor((H, N), 0.3),
          C_bias=tensor((H, N), 0.3), n_heads=H, n_groups=1, S=NS, A_floor=1e-4, heavy_tail=True)
names = ('mamba3_chunked', 'mamba3_chunk_tiles')
base = {n: S.shader_source(n) for n in names}
def skip(shader, entry):    # the entry point returns at once (its dispatch still runs)
    src = base[shader]
    i = src.index('fn ' + entry + '(')
    j = src.index('{', i) + 1
    return (shader, src[i:j], src[i:j] + '\n  if (p.T > 0u) { return; }')
def edit_of(e):             # [shader, old, new] or [shader, None, entry]: that entry skipped
    return skip(e[0], e[2]) if e[1] is None else tuple(e)
EDITS = {k: edit_of(e) for k, e in args['edits'].items()}
TILE_EDITS = {k: edit_of(e) for k, e in args['tile_edits'].items()}
def set_src(name):
    for n in names:
        S._cache[n] = base[n]
    edit = EDITS.get(name) or TILE_EDITS.get(name)
    if edit:
        shader, old, new = edit
        assert base[shader].count(old) == 1, name
        S._cache[shader] = base[shader].replace(old, new, 1)
    for n in names:
        device.forget_shader(n)
ys = []
async def timed(reps, path):
    b = device.batch()
    for _ in range(reps):
        y, _ = m3.mamba3_forward(b, *ins, path=path, **kw)
        ys.append(y)
    t0 = time.perf_counter()
    b.submit()
    await ys[-1].to_bytes()
    dt = time.perf_counter() - t0
    while len(ys) > 1:
        ys.pop(0).release()
    return dt
async def per_call(path):
    n_long, n_short, rounds = args['reps']
    await timed(n_short, path)
    long_runs, short_runs = [], []
    for _ in range(rounds):
        long_runs.append(await timed(n_long, path))
        short_runs.append(await timed(n_short, path))
    return round((min(long_runs) - min(short_runs)) / (n_long - n_short) * 1e6, 1)
out = []
async def one(label, path='parallel', **dev_attrs):
    print('variant', label, file=sys.stderr, flush=True)
    for k, v in dev_attrs.items():
        setattr(device, k, v)
    try:
        us = await per_call(path)
        raw = await ys[-1].to_bytes()
        yv = struct.unpack(f'<{len(raw) // 4}f', raw)
        out.append({'v': label, 'us_per_call': us, 'y_mean_abs': sum(map(abs, yv)) / len(yv),
                    'chunk': getattr(device, 'mamba3_chunk', None) or m3.forward_chunk_len(device, N, NS)})
    except Exception as e:
        out.append({'v': label, 'error': repr(e)[:300]})
    for k in dev_attrs:
        setattr(device, k, None)
set_src('base')
quick = args['quick']
await one('parallel')
await one('in_order', path='chunked')
for name in () if quick else EDITS:
    set_src(name)
    await one(name)
set_src('base')
if not quick:
    await one('parallel_chunk16', mamba3_chunk=16)
for L in (32, 16, 8):                 # the register-tiled delta and out (ops/mamba3_tiles)
    await one(f'tiles{L}', mamba3_tiles=True, mamba3_chunk=L)
for nb in () if quick else (8, 1):    # their operands in blocks of (at most) nb vec4s / dims
    await one(f'tiles16_blocks{nb}', mamba3_tiles=True, mamba3_chunk=16, mamba3_block=nb)
for name in () if quick else TILE_EDITS:
    set_src(name)
    await one(name, mamba3_tiles=True, mamba3_chunk=32)
set_src('base')
await one('parallel-again')
result = out
"""


C, TL = "mamba3_chunked", "mamba3_chunk_tiles"
# (shader, text in its resolved source, replacement), or (shader, None, entry): the entry point
# returns at once. tests/unit/test_ablation_edits.py checks each text is there, once.
EDITS = {
    "no_scalars": (C, "if (lid != 0u) { return; }\n  var cpv", "return;\n  var cpv"),
    "no_rotate": (C, "let kq = kq_rotated(b * p.T + t0 + t, h, g, (e % RN) / p.N, e % p.N, "
                     "CPH() + t * p.S);", "let kq = vec2<f32>(f32(e), f32(t));"),
    "no_m_dot": (C, "for (var n = 0u; n < N; n++) { dot += sh[CQ() + i * N + n] * "
                    "sh[CK() + j * N + n]; }", ""),
    "no_m_decay": (C, "for (var r = s + 1u; r <= t; r++) { dec *= sh[ROW_AL(CS()) + r]; }", ""),
    "delta_no_sum": (C, "sn += sh[ROW_DW(CS()) + t] * xs[t] * kt;", ""),
    "out_no_state": (C, "for (var j = 0u; j < R; j++) { ya[t * R + j] += a * "
                        "sh[CQ() + (t * R + j) * N + n]; }", ""),
    "out_no_intra": (C, "acc += sh[CM() + i * LR + j] * (xj * mx(h, j % R, pp));", ""),
    "skip_phi": (C, None, "mamba3_phi"), "skip_delta": (C, None, "mamba3_chunk_delta"),
    "skip_carry": (C, None, "mamba3_chunk_carry"), "skip_out": (C, None, "mamba3_chunk_out"),
}
TILE_EDITS = {   # the same for the tiled kernels (run at 32-token chunks)
    "tiles_delta_no_sum": (TL, "for (var j = 0u; j < rows; j++) { a = tile_add(a, "
                               "sv[j * PV + pi], sv[KB + j * nn + ni]); }", ""),
    "tiles_out_no_m": (TL, "for (var kk = 0u; kk < nn; kk++) { m = tile_add(m, "
                           "sv[RC + kk * LRV + li], sv[RK + kk * LRV + si]); }", ""),
    "tiles_out_no_state": (TL, "for (var kk = 0u; kk < nn; kk++) { yh = tile_add(yh, "
                               "sv[RC + kk * LRV + ti], sv[RA + kk * PV + pi]); }", ""),
    "tiles_out_no_intra": (TL, "for (var j = 0u; j < j_end; j++) { yi = tile_add(yi, "
                               "sv[RM + j * LRV + ti], sv[j * PV + pi]); }", ""),
    "tiles_skip_delta": (TL, None, "mamba3_tile_delta"),
    "tiles_skip_out": (TL, None, "mamba3_tile_out"),
}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("T", nargs="?", type=int, default=1024, help="tokens (default 1024)")
    ap.add_argument("--dawn", action="store_true",
                    help="through Dawn under Node (the tab's path) instead of wgpu-py")
    ap.add_argument("--quick", action="store_true",
                    help="the forms only (side by side, in order, tiled at 32/16/8), no ablations, "
                    "fewer runs (CPU adapters)")
    a = ap.parse_args(argv)
    if a.dawn:
        from tools.dawn_engine import DawnEngine as Engine
    else:
        from tools.native_engine import NativeEngine as Engine
    with Engine() as eng:
        adapter = eng.info.get("adapter") or {}
        print(json.dumps({"adapter": adapter.get("device") or adapter.get("description")}),
              flush=True)
        reps = (4, 1, 1) if a.quick else (12, 2, 3)   # forwards a long / short run, rounds
        for row in eng.run(SNIPPET, T=a.T, quick=a.quick, reps=reps, edits=EDITS,
                           tile_edits=TILE_EDITS):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
