"""GPU time of the decode mat-vec per shape, weight format and threads-per-row (native backend).

  python -m tools.sweep_matvec --shapes 2*4096x2048nc,160x4096,2048x4096,50280x2048n --formats f16,q4 --chain 300

A shape is [G*]NxK (G matrices of N rows x K inputs sharing x, one dispatch), suffixed `n` when
the layer's RMSNorm is folded into it and `c` when the conv step is folded into matrix 0's store
(Mamba-1's in_proj when decoding: 2*d_inner x d_model nc). For each shape, format, rows per
thread (RPT) in --rpts, staging of x (--stages), PREFETCH level in --prefetch and TPR in --tprs
(and the TPR the engine picks for that RPT; the engine's own choice is marked), the kernel runs
--reps times with timestamp queries around each dispatch (py_engine/gpu/native_profile.py) --
or, with --chain, around each pass of back-to-back dispatches over distinct weight copies (what
decode does; the measure the rules now come from) -- in --passes interleaved passes. Before
each configuration the engine's own choice (its RPT, TPR, staging and PREFETCH level) is timed
again, and the configuration is judged by its `ratio` to that neighbour: on an H200 one
configuration's time moved 2-4x between passes of one run (clocks, memory state), far more
than between neighbours (--no-reference: time alone, half the run). Prints JSON lines: each
configuration's best pass (by ratio) with every pass's time and ratio (passes_us,
passes_ratio) and the weight-read rate in GB/s (weight bytes / GPU time); the last line,
{"plan": ...}, is the best choice per shape at the engine's PREFETCH level as a
MAMBAWEB_MATVEC_PLAN for an end-to-end bench variant.
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
G, N, K, normed, conv = args['G'], args['N'], args['K'], args['normed'], args['conv']
rnd = random.Random(0)
x = Tensor.from_list(device, (1, K), [rnd.uniform(-1, 1) for _ in range(K)])
nw = Tensor.from_list(device, (K,), [rnd.uniform(0.5, 1.5) for _ in range(K)])
w32 = Tensor.from_bytes(device, (N, K), struct.pack('<f', 0.01) * (N * K))
ys = [Tensor(device, (1, N)) for _ in range(G)]
cv = None
if conv:
    cv = (Tensor.from_list(device, (N, 4), [0.1] * (4 * N)), Tensor.from_list(device, (N,), [0.0] * N),
          Tensor.from_list(device, (1, N, 4), [0.0] * (4 * N)), 0)
    # the conv fold reads the conv's weight and bias through the norm weight's binding: packed
    # after it, as a model's load packs them (decode_param_packs)
    from py_engine.ops.weight_pack import pack_params
    pack_params(device, [nw, cv[0], cv[1]])
out = []
def weight(fmt):    # a new weight in fmt (quantize hands f32 back as itself: copy it)
    if fmt == 'f32':
        return Tensor.from_bytes(device, (N, K), struct.pack('<f', 0.01) * (N * K))
    b = device.batch(); w = wf.quantize(b, w32, fmt); b.submit()
    return w

async def measure(sets, rpt, tpr, stage, pf):
    # GPU us per call of one configuration: the mean of --reps runs after 3 warm-ups
    device.matvec_prefetch = pf
    prof = KernelProfiler(device, span=bool(args['chain_mb']))
    device.profiler = prof
    for rep in range(args['reps'] + 3):
        b = device.batch()
        for ws in sets:
            xin = NormedRows(x, nw, 1e-5) if normed else x
            wf.matvec(b, xin, ws, ys, 1, tpr=tpr, rpt=rpt, stage=stage, conv=cv)
        b.submit()
        if rep == 2:
            await device.finish(); await prof.collect()
    rows = await prof.collect()
    device.profiler = None
    return rows[0]['us_per_call']

device.matvec_prefetch = None
engine_pf = wf.prefetch_level(device)
for fmt in args['formats']:
    sets = [[weight(fmt) for _ in range(G)]]
    if args['chain_mb']:           # enough distinct weights that the chain streams from memory
        one = sum(w.nbytes for w in sets[0])
        copies = max(2, min(64, -(-int(args['chain_mb'] * 1e6) // one)))
        sets += [[weight(fmt) for _ in range(G)] for _ in range(copies - 1)]
    await device.finish()
    engine_rpt, engine_tpr, engine_stage = wf.choices(device, fmt, K, N, 1, G)
    pick = (engine_rpt, engine_tpr, engine_stage, engine_pf)
    for rpt, stage, pf in [(r, st, f) for r in args['rpts'] for st in args['stages']
                           for f in args['prefetch']]:
        device.matvec_prefetch = pf
        auto = wf.rows_per_thread_group(fmt, K, N, rpt, device, G)
        for tpr in sorted(set(args['tprs'] + [auto])):
            # the engine's own choice timed just before: the GPU's clocks and the memory's state
            # drift within a run (2-4x between passes on an H200), much less between neighbours
            ref = await measure(sets, *pick) if args['reference'] else None
            mine = (rpt, tpr, stage, pf)
            us = ref if ref is not None and mine == pick else await measure(sets, *mine)
            out.append({'G': G, 'N': N, 'K': K, 'normed': normed, 'conv': conv, 'format': fmt,
                        'rpt': rpt, 'tpr': tpr, 'stage': stage, 'prefetch': pf, 'gpu_us': us,
                        'ref_us': ref, 'ratio': round(us / ref, 4) if ref else None,
                        'chain': len(sets) if args['chain_mb'] else 0,
                        'engine_pick': mine == pick,
                        'weight_gb_per_s': round(sum(w.nbytes for w in sets[0]) / us / 1e3, 1)})
    device.matvec_prefetch = None
    for ws in sets:
        for w in ws:
            w.release()
for t in [x, nw, w32] + ys + (list(cv[:3]) if cv else []):
    t.release()
result = out
"""


def parse_shape(shape):
    """'[G*]NxK[n][c]' -> (G, N, K, normed, conv): G matrices of N rows sharing x (a multi
    call, as in_proj's x and z halves), n: the layer's RMSNorm folded in, c: the conv step
    folded into matrix 0's store (Mamba's in_proj when decoding)."""
    g, _, rest = shape.rpartition("*")
    flags = ""
    while rest and rest[-1] in "nc":
        flags, rest = rest[-1] + flags, rest[:-1]
    N, K = (int(v) for v in rest.split("x"))
    return int(g or 1), N, K, "n" in flags, "c" in flags


def main(argv=None):
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="8192x2048n,160x4096,2048x4096,50280x2048")
    ap.add_argument("--formats", default="f32,f16,q4")
    ap.add_argument("--tprs", default="16,32,64,128,256",
                    help="threads per row to try besides the engine's pick ('' for that alone)")
    ap.add_argument("--rpts", default="1,2,4", help="rows per thread to try")
    ap.add_argument("--stages", default="0,1", help="x staged in workgroup memory: 0, 1 or both")
    ap.add_argument("--prefetch", default="3",
                    help="PREFETCH levels to try (0,1,2,3; the engine's is 3, and a plan runs at "
                         "the engine's)")
    ap.add_argument("--chain", type=float, default=0, metavar="MB",
                    help="time chains of distinct weights (about MB of them, 2..64 copies) "
                         "dispatched back to back in one pass, stamped only at its ends: the "
                         "cost of a dispatch in decode's own encoding (0: one dispatch per "
                         "submit, stamped around it)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--each", action="store_true",
                    help="also print every pass's row as it is measured (marked each: true)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="do not time the engine's own choice before each configuration (its "
                         "rows then rank by time alone, not by `ratio` to that neighbour)")
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
                G, N, K, normed, conv = parse_shape(shape)
                for r in eng.run(SNIPPET, G=G, N=N, K=K, normed=normed, conv=conv,
                                 chain_mb=args.chain,
                                 prefetch=[int(f) for f in args.prefetch.split(",")],
                                 formats=args.formats.split(","),
                                 tprs=[int(t) for t in args.tprs.split(",") if t],
                                 rpts=[int(r) for r in args.rpts.split(",")],
                                 stages=[s == "1" for s in args.stages.split(",")],
                                 reps=args.reps, reference=args.reference):
                    key = tuple(r[k] for k in ("G", "N", "K", "normed", "conv", "format", "rpt",
                                               "tpr", "stage", "prefetch"))
                    runs.setdefault(key, []).append(r)
                    if args.each:                  # as it comes (a cut-short run keeps them)
                        print(json.dumps(dict(r, each=True)), flush=True)
    best = []
    for rows in runs.values():
        r = dict(min(rows, key=rank), passes_us=[x["gpu_us"] for x in rows],
                 passes_ratio=[x.get("ratio") for x in rows])
        best.append(r)
        print(json.dumps(r), flush=True)
    # the best choice per shape at the engine's prefetch level, as a bench variant takes it:
    #   mambaweb bench --native ... --variant "best:MAMBAWEB_MATVEC_PLAN=<plan>"
    level = next((r["prefetch"] for r in best if r.get("engine_pick")), 0)
    print(json.dumps({"plan": plan_of(best, level)}), flush=True)
    return 0


def rank(r):
    """How a row ranks (lower is better): its time over the engine's choice timed just before it
    (`ratio`, the sweep's default), else its time."""
    return r["ratio"] if r.get("ratio") is not None else r["gpu_us"]


def plan_of(rows, prefetch=0):
    """MAMBAWEB_MATVEC_PLAN (py_engine/ops/weight_format.planned) of the best row (`rank`) at
    PREFETCH level `prefetch` (the plan cannot set it: the engine's level) per (format, N, K):
    'fmt:NxK=RPT/TPR/STAGE;...', in the rows' order."""
    best = {}
    for r in rows:
        k = (r["format"], r["N"], r["K"])
        if r.get("prefetch", 0) == prefetch and (k not in best or rank(r) < rank(best[k])):
            best[k] = r
    return ";".join(f"{f}:{n}x{k}={r['rpt']}/{r['tpr']}/{int(r['stage'])}"
                    for (f, n, k), r in best.items())


if __name__ == "__main__":
    sys.exit(main())
