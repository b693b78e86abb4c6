"""GPU time of the decode mat-vec per shape, weight format and threads-per-row (native backend).

  python -m tools.sweep_matvec --shapes 8192x2048n,160x4096,2048x4096,50280x2048 --formats f32,f16,q4

A shape is NxK (rows x inputs), suffixed `n` when the layer's RMSNorm is folded into it (as
Mamba's in_proj is when decoding). For each shape, format, rows per thread (RPT) in --rpts,
staging of x (--stages) and TPR in --tprs (and the TPR the engine picks for that RPT; the
engine's own choice is marked), the kernel runs --reps times with timestamp queries around each
dispatch (py_engine/gpu/native_profile.py), in --passes interleaved passes; prints JSON lines:
the fastest pass's mean GPU us per call (every pass's in passes_us) and the weight-read rate in
GB/s (weight bytes / GPU time), so the best choice per shape and its distance from the device's
read ceiling are plain.
"""
import argparse
import json
import sys

SNIPPET = """
import random, struct
from py_engine.gpu.native_profile import KernelProfiler
from py_engine.gpu.tensor import Tensor
from py_engine.ops import weight_format as wf
from py_engine.ops.rmsnorm import NormedRows
N, K, normed = args['N'], args['K'], args['normed']
rnd = random.Random(0)
x = Tensor.from_list(device, (1, K), [rnd.uniform(-1, 1) for _ in range(K)])
nw = Tensor.from_list(device, (K,), [rnd.uniform(0.5, 1.5) for _ in range(K)])
w32 = Tensor.from_bytes(device, (N, K), struct.pack('<f', 0.01) * (N * K))
y = Tensor(device, (1, N))
out = []
for fmt in args['formats']:
    b = device.batch(); w = wf.quantize(b, w32, fmt); b.submit(); await device.finish()
    engine_rpt = wf.rows_per_thread(device, N, 1)
    for rpt, stage in [(r, st) for r in args['rpts'] for st in args['stages']]:
        auto = wf.rows_per_thread_group(fmt, K, N, rpt, device)
        for tpr in sorted(set(args['tprs'] + [auto])):
            prof = KernelProfiler(device)
            device.profiler = prof
            for rep in range(args['reps'] + 3):
                b = device.batch()
                xin = NormedRows(x, nw, 1e-5) if normed else x
                wf.matvec(b, xin, [w], [y], 1, tpr=tpr, rpt=rpt, stage=stage)
                b.submit()
                if rep == 2:
                    await device.finish(); await prof.collect()
            rows = await prof.collect()
            device.profiler = None
            us = rows[0]['us_per_call']
            out.append({'N': N, 'K': K, 'normed': normed, 'format': fmt, 'rpt': rpt, 'tpr': tpr,
                        'stage': stage, 'gpu_us': us,
                        'engine_pick': tpr == auto and rpt == engine_rpt and
                        stage == wf.stage_x(device, 1, None, fmt, N),
                        'weight_gb_per_s': round(w.nbytes / us / 1e3, 1)})
    if w is not w32:
        w.release()
for t in (x, nw, w32, y):
    t.release()
result = out
"""


def main(argv=None):
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="8192x2048n,160x4096,2048x4096,50280x2048")
    ap.add_argument("--formats", default="f32,f16,q4")
    ap.add_argument("--tprs", default="16,32,64,128,256",
                    help="threads per row to try besides the engine's pick ('' for that alone)")
    ap.add_argument("--rpts", default="1,2,4", help="rows per thread to try")
    ap.add_argument("--stages", default="0,1", help="x staged in workgroup memory: 0, 1 or both")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--passes", type=int, default=2,
                    help="sweep every shape this many times, interleaved, and keep each "
                         "configuration's fastest pass (one H200 call saw the same kernel "
                         "differ 3x between passes: clocks ramping)")
    args = ap.parse_args(argv)
    runs = {}                          # configuration -> its row from every pass
    with NativeEngine() as eng:
        print(json.dumps({"adapter": eng.info["adapter"]}), flush=True)
        for _ in range(max(1, args.passes)):
            for shape in args.shapes.split(","):
                normed = shape.endswith("n")
                N, K = (int(v) for v in shape.rstrip("n").split("x"))
                for r in eng.run(SNIPPET, N=N, K=K, normed=normed,
                                 formats=args.formats.split(","),
                                 tprs=[int(t) for t in args.tprs.split(",") if t],
                                 rpts=[int(r) for r in args.rpts.split(",")],
                                 stages=[s == "1" for s in args.stages.split(",")],
                                 reps=args.reps):
                    key = tuple(r[k] for k in ("N", "K", "normed", "format", "rpt", "tpr", "stage"))
                    runs.setdefault(key, []).append(r)
    for rows in runs.values():
        r = dict(min(rows, key=lambda r: r["gpu_us"]), passes_us=[x["gpu_us"] for x in rows])
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
