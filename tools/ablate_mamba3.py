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

from tools.ablation import HARNESS

SNIPPET = r"""
import py_engine.ops.mamba3 as m3
from py_engine.benchmarks.mamba3_scan import _tensor
T, H, P, N, NS = args['T'], 24, 64, 128, 32
seed = iter(range(100, 200))
def tensor(shape, scale=1.0):      # fixed pseudo-random values, no numpy (Pyodide has none)
    return _tensor(device, shape, next(seed), scale)
ins = [tensor((1, T, w), sc) for w, sc in ((H * P, 1.0), (N, 0.5), (N, 0.5), (H, 0.5), (H, 0.5),
                                          (H, 0.5), (NS, 0.5))]
kw = dict(dt_bias=tensor((H,), 0.5), D=tensor((H,)), B_bias=tensor((H, N), 0.3),
          C_bias=tensor((H, N), 0.3), n_heads=H, n_groups=1, S=NS, A_floor=1e-4, heavy_tail=True)
ys = []
path = 'parallel'           # what one() times; set per variant below
def record(b):
    y, _ = m3.mamba3_forward(b, *ins, path=path, **kw)
    ys.append(y)
    while len(ys) > 2:      # the last two kept: the readback's and the one being recorded
        ys.pop(0).release()
output = lambda: ys[-1]
info = lambda: {'chunk': getattr(device, 'mamba3_chunk', None) or m3.forward_chunk_len(device, N, NS)}
""" + HARNESS + r"""
set_src('base')
quick = args['quick']
await one('parallel', mamba3_tiles=False)   # the tiles are the rule on real GPUs
path = 'chunked'
await one('in_order')
path = 'parallel'
TILE_NAMES = [n for n in EDITS if n.startswith('tiles_')]   # run with the tiles on
for name in () if quick else [n for n in EDITS if n not in TILE_NAMES]:
    set_src(name)
    await one(name, mamba3_tiles=False)
set_src('base')
if not quick:
    await one('parallel_chunk16', mamba3_tiles=False, mamba3_chunk=16)
# the angles walked in 32 segments side by side (ops/mamba3.phi_segments), untiled and tiled
await one('phi_segments', mamba3_tiles=False, mamba3_phi_segments=True)
await one('tiles32_phi_segments', mamba3_tiles=True, mamba3_chunk=32, mamba3_phi_segments=True)
for L in (32, 16, 8):                 # the register-tiled delta and out (ops/mamba3_tiles)
    await one(f'tiles{L}', mamba3_tiles=True, mamba3_chunk=L)
for nb in () if quick else (8, 1):    # their operands in blocks of (at most) nb vec4s / dims
    await one(f'tiles16_blocks{nb}', mamba3_tiles=True, mamba3_chunk=16, mamba3_block=nb)
for name in () if quick else TILE_NAMES:
    set_src(name)
    await one(name, mamba3_tiles=True, mamba3_chunk=32)
set_src('base')
await one('parallel-again', mamba3_tiles=False)
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
    "tiles_delta_no_sum": (TL, "let a = tile_run(zero_tile(), pi, PV, KB + ni, nn, rows);",
                           "let a = zero_tile();"),
    "tiles_out_no_m": (TL, "m = tile_run(m, RC + li, LRV, RK + si, LRV, nn);", ""),
    "tiles_out_no_state": (TL, "yh = tile_run(yh, RC + ti, LRV, RA + pi, PV, nn);", ""),
    "tiles_out_no_intra": (TL, "let yi = tile_run(zero_tile(), RM + ti, LRV, pi, PV, j_end);",
                           "let yi = zero_tile();"),
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
    from tools.engines import adapter_name, engine_class
    with engine_class(a.dawn)() as eng:
        print(json.dumps({"adapter": adapter_name(eng)}), flush=True)
        reps = (4, 1, 1) if a.quick else (12, 2, 3)   # forwards a long / short run, rounds
        for row in eng.run(SNIPPET, T=a.T, quick=a.quick, reps=reps,
                           edits=dict(EDITS, **TILE_EDITS)):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
