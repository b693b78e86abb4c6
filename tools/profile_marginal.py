"""What each kernel of the decode step costs inside the token's chain (native backend, or with
--dawn the tab's code path on Chrome's WebGPU), measured
by adding it: every dispatch of one kernel and grid is recorded twice into the step graph, and
the decode's GPU ms per token (py_engine/benchmarks/model.py: a queued group's wait less an idle
readback) is compared with the plain graph's. The difference is that dispatch's marginal cost
where it sits -- its launch, its ramp and tail, its memory time, as the chain pays them --
which timestamp queries between dispatches overstate (they drain the pipe at each stamp:
tools/profile_kernels.py read ~2.7x the plain token time on an H200).

  python -m tools.profile_marginal --models mamba1_4b --weights f16,q4 --tokens 64 [--dawn]

Doubled dispatches compute garbage (a residual added twice, a conv state shifted twice) at the
same cost; the generated ids are not looked at. The position and sampling kernels are never
doubled. Prints one JSON line per model and format: the plain GPU ms per token, and per kernel
key (`shader:entry@XxYxZ`, the grid telling matrices apart) its dispatches per token, the GPU
us per token it added and the us per dispatch.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

SNIPPET = """
from py_engine.benchmarks import model as mb
from py_engine.gpu import batch as B
from py_engine.io.hf_loader import load_model_local
from py_engine.models import generate as G

from py_engine.io.hf_loader import load_model
if args.get('url'):
    model = await load_model(device, args['url'], weights_format=args['fmt'])
else:
    model = await load_model_local(device, args['folder'], weights_format=args['fmt'])
orig_dispatch, orig_record = B.Batch.dispatch, G.Generator._record_step
seen = {}                                   # key -> dispatches in the recorded step graph
state = {'log': False, 'twice': None}

names = {}                                  # id(pipeline) -> "shader:entry", any backend

def key_of(batch, pipeline, x, y, z):
    if id(pipeline) not in names:
        names.update({id(p): f"{k[0]}:{k[1]}" for k, p in batch.device._pipelines.items()})
    return f"{names[id(pipeline)]}@{x}x{y}x{z}"

def dispatch(self, pipeline, bind_group, x, y=1, z=1):
    orig_dispatch(self, pipeline, bind_group, x, y, z)
    if state['log'] or state['twice']:
        k = key_of(self, pipeline, x, y, z)
        if state['log']:
            seen[k] = seen.get(k, 0) + 1
        if k == state['twice']:
            orig_dispatch(self, pipeline, bind_group, x, y, z)

def record(self, *a, **kw):
    state['log'] = not seen
    try:
        return orig_record(self, *a, **kw)
    finally:
        state['log'] = False

B.Batch.dispatch, G.Generator._record_step = dispatch, record

try:
    plain = await mb.least_gpu_decode(model, args['tokens'], args['reps'])
    per_token = plain['dispatches_per_token']
    steps = max(1, round(sum(seen.values()) / per_token))     # steps in the recorded graph
    rows = []
    skip = ('position', 'decode_control', 'sampling')
    for k, n in sorted(seen.items(), key=lambda kv: -kv[1]):
        if k.startswith(skip):
            continue
        state['twice'] = k
        d = await mb.least_gpu_decode(model, args['tokens'], args['reps'])
        state['twice'] = None
        added = 1000 * (d['gpu_ms_per_token'] - plain['gpu_ms_per_token'])
        calls = n / steps
        rows.append({'kernel': k, 'per_token': calls, 'added_us_per_token': round(added, 1),
                     'us_per_dispatch': round(added / calls, 2)})
    again = await mb.least_gpu_decode(model, args['tokens'], args['reps'])
finally:
    B.Batch.dispatch, G.Generator._record_step = orig_dispatch, orig_record
result = {'weights': args['fmt'], 'gpu_ms_per_token': round(plain['gpu_ms_per_token'], 4),
          'gpu_ms_per_token_again': round(again['gpu_ms_per_token'], 4),
          'tokens_per_s': round(plain['tokens_per_s'], 1), 'dispatches_per_token': per_token,
          'kernels': rows}
model.release()
"""


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mamba130m")
    ap.add_argument("--weights", default="f16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2, help="decode runs per variant, best kept")
    ap.add_argument("--dawn", action="store_true",
                    help="through the tab's code path on Chrome's WebGPU (Dawn under Node)")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="mambaweb-marginal-") as tmp:
        for m in models:
            _write_random_model(Path(tmp) / m, MODEL_CONFIGS[m])
        if args.dawn:
            from tools.dawn_engine import DawnEngine
            eng = DawnEngine(model_dirs=[tmp])
        else:
            eng = NativeEngine()
        with eng:
            print(json.dumps({"adapter": eng.info.get("adapter")}), flush=True)
            for m in models:
                where = ({"url": f"{eng.server.url}/weights/{m}/"} if args.dawn
                         else {"folder": str(Path(tmp) / m)})
                for fmt in args.weights.split(","):
                    r = eng.run(SNIPPET, fmt=fmt, tokens=args.tokens, reps=args.reps,
                                timeout=3000, **where)
                    print(json.dumps({f"{m}/{fmt}": r}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
