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

from tools.ablation import HARNESS

SNIPPET = r"""
import numpy as np
import py_engine.ops.ssd as ssd
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
def record(b):
    ssd.ssd_forward(b, x, dt, A_log, B, C, n_groups=G, D=D, dt_bias=dtb, chunk=L, h0=st,
                    h_out=st, out=y)
output = lambda: y
info = lambda: {'path': list(ssd.forward_path(device, T, L, P, N))}
""" + HARNESS + r"""
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


# (shader, text in its resolved source, replacement) (tools/ablation.py): each a product's sums
# taken out. tests/unit/test_ablation_edits.py checks each text is there, once.
K = "ssd_chunked"
EDITS = {
    "states_nosum": (K, "let a = tile_run(zero_tile(), pi, PV, XB + ni, nn, len);",
                     "let a = zero_tile();"),
    "out_noM": (K, "m = tile_run(m, RC + li, LV, RB + si, LV, nn);", ""),
    "out_nointer": (K, "yh = tile_run(yh, RC + ti, LV, RH + pi, PV, nn);", ""),
    "out_nointra": (K, "let yi = tile_run(zero_tile(), RM + ti, LV, pi, PV, min(4u * ti + 4u, len));",
                    "let yi = zero_tile();"),
}


def main(argv):
    from tools.native_engine import NativeEngine
    T, H, P, N = [int(a) for a in argv] + [1024, 24, 64, 128][len(argv):]
    with NativeEngine() as eng:
        print(json.dumps({"adapter": eng.info.get("adapter", {}).get("device")}), flush=True)
        for row in eng.run(SNIPPET, T=T, H=H, P=P, N=N, edits=EDITS, reps=(24, 4, 3)):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
