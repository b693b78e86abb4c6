"""GPU time of a plain read of S MB as one dependent dispatch in a chain (native backend): the
least any decode mat-vec reading S MB of weights can take there, launch, ramp and tail included.

  python -m tools.read_curve --sizes 1,4,8.4,16.8,33.5,67,134 --chain 300

For each size, distinct buffers of S MB (about --chain MB of them, so the chain streams from
memory, not the L2) are each read once by shaders/bench_read.wgsl's kernel, dispatched back to
back in one pass; every dispatch writes the same output, so the backend puts a barrier between
every two, as between a decode step's kernels. The pass is stamped only at its two ends
(KernelProfiler(span=True), as tools/sweep_matvec.py --chain): its time over its dispatches is
what one such read costs in decode's encoding. Prints a JSON line a size: gpu_us, gb_per_s
(S / gpu_us), and the fit of gpu_us = a + S / b over the sizes (a: the fixed cost of a
dependent read dispatch, b: its streaming rate) on the last line. Compare with the mat-vecs'
`weight_gb_per_s` of tools/sweep_matvec.py at the same sizes: a mat-vec near this curve can
only gain by fewer dispatches or bytes.
"""
import argparse
import json
import sys

SNIPPET = """
from py_engine.gpu.native_profile import KernelProfiler
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops._common import params
out = []
for mb in args['sizes']:
    n4 = int(mb * 1e6) // 16
    threads = min(256 * 1024, -(-n4 // 256) * 256)   # at most one 16-byte load a thread a trip
    copies = max(2, min(256, -(-int(args['chain_mb'] * 1e6) // (16 * n4))))
    bufs = [Tensor(device, (4 * n4,)) for _ in range(copies)]
    sink = Tensor(device, (threads,))
    b = device.batch()
    for t in bufs:
        ew.fill(b, t, 1.0)
    b.submit()
    u = device.uniform(params(n4, threads, 1, 0))
    best = None
    for rep in range(args['reps'] + 2):
        prof = KernelProfiler(device, span=True)
        device.profiler = prof
        b = device.batch()
        for t in bufs:
            b.run("bench_read", "read_bandwidth", [u, t.binding, sink.binding], threads // 256)
        b.submit()
        rows = await prof.collect()
        device.profiler = None
        us = rows[0]['us_per_call']
        if rep >= 2:
            best = us if best is None else min(best, us)
    out.append({'mb': mb, 'copies': copies, 'threads': threads, 'gpu_us': round(best, 3),
                'gb_per_s': round(16 * n4 / best / 1e3, 1)})
    for t in bufs + [sink]:
        t.release()
result = out
"""


def fit(rows):
    """Least squares of gpu_us = a + mb / b over the rows -> (a us, b GB/s), or None."""
    n = len(rows)
    if n < 2:
        return None
    xs = [r["mb"] for r in rows]
    ys = [r["gpu_us"] for r in rows]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, (1e3 / slope if slope > 0 else None)


def main(argv=None):
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,4,8.4,16.8,33.5,67,134", help="MB per dispatch")
    ap.add_argument("--chain", type=float, default=300, metavar="MB",
                    help="about this many MB of distinct buffers a pass (2..256 of them)")
    ap.add_argument("--reps", type=int, default=5, help="passes a size, the fastest kept")
    args = ap.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    with NativeEngine() as eng:
        print(json.dumps({"adapter": eng.info["adapter"]}), flush=True)
        rows = list(eng.run(SNIPPET, sizes=sizes, chain_mb=args.chain, reps=args.reps))
    for r in rows:
        print(json.dumps(r), flush=True)
    f = fit(rows)
    if f is not None:
        print(json.dumps({"fixed_us": round(f[0], 3),
                          "stream_gb_per_s": round(f[1], 1) if f[1] else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
