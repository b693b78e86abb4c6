"""Host time to record a model's prefill graph, nothing submitted (native backend).

  python -m tools.bench_record --model mamba130m --weights f16 --tokens 64 --reps 80

A prefill is recorded anew for every prompt, so for a short prompt Python's recording -- op
logic, uniforms, pipelines and bind groups looked up, one command appended per dispatch -- is
most of the time to first token (what a streaming batch cannot hide once the GPU is the faster
of the two). Writes a random model of the bench's shape (tools/cmd_bench.MODEL_CONFIGS) into a
temporary folder, loads it, marks the adapter as a real GPU so the real-GPU paths are recorded
(tiled GEMMs, split-K, lanes scans: nothing runs, so a CPU adapter will do), records the forward
--reps times and prints JSON: dispatches, min and median ms, median us per dispatch.
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

SNIPPET = """
import time
from py_engine.io.hf_loader import load_model_local
from py_engine.autograd.functional import Ctx
device.info['is_fallback'] = False       # record the real GPU's paths (nothing is submitted)
model = await load_model_local(device, args['folder'], weights_format=args['fmt'])
ids = model.ids_tensor([(i * 7919) % model.cfg.vocab_size for i in range(args['T'])])
state = model.new_state()
ts = []
for rep in range(args['reps'] + 3):       # three to warm pipelines, caches and the pool
    t0 = time.perf_counter()
    batch = device.batch()
    logits = model.forward(Ctx(batch), ids, 1, state, last_only=True)
    ts.append(time.perf_counter() - t0)
    n = batch.dispatch_count
    batch.commands = []                   # dropped, never submitted
    logits.release()
result = {'seconds': ts[3:], 'dispatches': n}
"""


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mamba130m", choices=sorted(MODEL_CONFIGS))
    ap.add_argument("--weights", default="f16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mambaweb-record-") as tmp, NativeEngine() as eng:
        folder = Path(tmp) / args.model
        _write_random_model(folder, MODEL_CONFIGS[args.model])
        r = eng.run(SNIPPET, folder=str(folder), fmt=args.weights, T=args.tokens, reps=args.reps)
    ts = r["seconds"]
    med = statistics.median(ts)
    print(json.dumps({"model": args.model, "weights": args.weights, "tokens": args.tokens,
                      "dispatches": r["dispatches"], "min_ms": round(1000 * min(ts), 2),
                      "median_ms": round(1000 * med, 2),
                      "us_per_dispatch": round(1e6 * med / r["dispatches"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
