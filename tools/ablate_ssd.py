"""Where Mamba-2's chunked SSD forward spends its time, by ablation (native backend): one
`ops/ssd.ssd_forward` call at a model's head shape timed alone (many calls in one submit, the
wall time of the submit to a readback, less that of a shorter run: no host time counted), with
parts of shaders/ssd_chunked.wgsl removed -- results wrong on purpose, timing only -- and with
its choices changed (the 64-thread kernels, the chunk length, the blocks of dims), all in one
process.

  python -m tools.ablate_ssd [T] [H] [P] [N]      # default 1024 tokens, mamba2-130m's 24 x 64 x 128

Prints one JSON line per variant: us per forward call (three dispatches: states, carry, out).
"""
import json
import sys

SNIPPET = r"""
import time
import numpy as np
import py_engine.ops.ssd as ssd
from py_engine.gpu import shaders as S
from py_engine.gpu.tensor import Tensor
nb, T, H, P, N = 1, args['T'], args['H'], args['P'], args['N']
G, L = 1, 32
rng = np.random.default_rng(0)
def tensor(shape, scale=1.0, low=None):
    a = (rng.uniform(low, 0.5, shape) if low is not None else rng.standard_normal(shape) * scale)
    t = Tensor(device, shape)
    device.write(t.buffer, a.astype(np.float32).tobytes(), t.offset)
    return t
x, dt = tensor((nb, T, H * P)), tensor((nb, T, H), 0.5)
B, C = tensor((nb, T, G * N), 0.3), tensor((nb, T, G * N), 0.3)
A_log, D, dtb = tensor((H,), low=-1.0), tensor((H,)), tensor((H,), low=-1.0)
y, st = Tensor(device, (nb, T, H * P)), Tensor(device, (nb, H, P, N))
S.shader_source('ssd_chunked')
base = S._cache['ssd_chunked']
EDITS = args['edits']
def set_src(name):
    src = base
    if name in EDITS:
        old, new = EDITS[name]
        assert old in src, name
        src = src.replace(old, new, 1)
    S._cache['ssd_chunked'] = src
    device.forget_shader('ssd_chunked')
async def timed(reps):
    b = device.batch()
    for _ in range(reps):
        ssd.ssd_forward(b, x, dt, A_log, B, C, n_groups=G, D=D, dt_bias=dtb, chunk=L, h0=st,
                        h_out=st, out=y)
    t0 = time.perf_counter()
    b.submit()
    await y.to_bytes()
    return time.perf_counter() - t0
async def per_call():
    await timed(2)                                   # pipelines made, caches warm
    # the best of three runs of each length, then their difference (a difference per pair went
    # negative once on the H200: one pair's short run met a slow moment)
    long_runs, short_runs = [], []
    for _ in range(3):
        long_runs.append(await timed(24))
        short_runs.append(await timed(4))
    return round((min(long_runs) - min(short_runs)) / 20 * 1e6, 1)
out = []
async def one(label, **dev_attrs):
    for k, v in dev_attrs.items():
        setattr(device, k, v)
    try:
        us = await per_call()
        ys = np.frombuffer(await y.to_bytes(), np.float32)
        out.append({'v': label, 'us_per_call': us, 'y_mean_abs': float(np.abs(ys).mean()),
                    'path': list(ssd.forward_path(device, T, L, P, N))})
    except Exception as e:
        out.append({'v': label, 'error': repr(e)[:300]})
    for k in dev_attrs:
        setattr(device, k, None)
await one('spread', ssd_parallel=True)
await one('classic', ssd_parallel=False)
for name in EDITS:
    set_src(name)
    await one(name, ssd_parallel=True)
set_src('base')
for Ls in (16, 8):
    await one(f'chunk{Ls}', ssd_parallel=True, ssd_chunk=Ls)
for nb in (15, 7):      # the blocks a 16 KiB device takes at mamba2-130m's heads (B vec4s 15, dims 7)
    await one(f'blocks{nb}', ssd_parallel=True, ssd_block=nb)
await one('spread-again', ssd_parallel=True)
result = out
"""


# (text in the resolved ssd_chunked source, replacement): each a product's sums taken out.
# tests/unit/test_ablation_edits.py checks each text is there, once.
EDITS = {
    "states_nosum": ("a = tile_add(a, sv[t * PV + pi], sv[XB + t * nn + ni]);", ""),
    "out_noM": ("m = tile_add(m, sv[RC + k * LV + li], sv[RB + k * LV + si]);", ""),
    "out_nointer": ("yh = tile_add(yh, sv[RC + k * LV + ti], sv[RH + k * PV + pi]);", ""),
    "out_nointra": ("yi = tile_add(yi, sv[RM + s * LV + ti], sv[s * PV + pi]);", ""),
}


def main(argv):
    from tools.native_engine import NativeEngine
    T, H, P, N = [int(a) for a in argv] + [1024, 24, 64, 128][len(argv):]
    with NativeEngine() as eng:
        print(json.dumps({"adapter": eng.info.get("adapter", {}).get("device")}), flush=True)
        for row in eng.run(SNIPPET, T=T, H=H, P=P, N=N, edits=EDITS):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
