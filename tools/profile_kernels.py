"""Where a decode token's and a prefill's GPU time goes, kernel by kernel (native backend).

  python -m tools.profile_kernels --models mamba1_4b --weights f32,f16 --tokens 32 --prefill 1024

Uses WebGPU timestamp queries (py_engine/gpu/native_profile.py): stamps between the dispatches of
one pass where the device allows it (what each dispatch adds to the token's chain), else, or with
--pass-per-dispatch, every dispatch in its own timed pass. Prints one JSON object: per model and weight format, the decode's GPU microseconds per
token by kernel (sum, and against the token's wall time in normal, unprofiled decode), and the
same for one prefill of `--prefill` tokens. The gap between the wall time and the GPU sum is the
host and queue overhead; the GPU sum against bytes read says how close each kernel is to the
memory ceiling.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

SNIPPET = """
import time
from py_engine.autograd.functional import Ctx
from py_engine.benchmarks import model as mb
from py_engine.gpu.native_profile import KernelProfiler
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
n = args['tokens']
model = await load_model_local(device, args['folder'], weights_format=args['fmt'])
plain = await mb.decode_tokens_per_s(model, n)          # unprofiled, as the app decodes
prof = KernelProfiler(device, in_pass=args['in_pass'])
device.profiler = prof
gen = Generator(model, SamplingConfig(greedy=True), max_tokens=2 * n + 64, group=16)
async for _ in gen.stream([1, 2, 3, 4], 17):             # records the step graph, warms up
    pass
await prof.collect()
async for _ in gen.stream([5], n + 1):
    pass
rows = await prof.collect()
gen.release()
decode_rows = []
for r in rows:
    r = dict(r)
    r['us_per_token'] = round(r['gpu_us'] / n, 2)
    decode_rows.append(r)
gpu_us_per_token = sum(r['gpu_us'] for r in rows) / n
pre = None
if args['prefill']:
    T = args['prefill']
    ids = model.ids_tensor([(i * 7919) % model.cfg.vocab_size for i in range(T)])
    for rep in range(2):
        state = model.new_state()
        batch = device.batch()
        logits = model.forward(Ctx(batch), ids, 1, state, last_only=True)
        batch.submit()
        await logits.to_bytes()
        logits.release()
        state.release()
        prow = await prof.collect()           # the second run's (pipelines built)
    ids.release()
    pre = {'tokens': T, 'gpu_ms': round(sum(r['gpu_us'] for r in prow) / 1e3, 3),
           'kernels': prow[:12]}
device.profiler = None
result = {'weights': args['fmt'], 'weight_bytes_per_token': mb.weight_bytes_per_token(model),
          'decode_ms_per_token_wall': plain['ms_per_token'],
          'decode_tokens_per_s': plain['tokens_per_s'],
          'dispatches_per_token': plain['dispatches_per_token'],
          'decode_gpu_us_per_token': round(gpu_us_per_token, 1),
          'decode_kernels': decode_rows[:16], 'prefill': pre, 'in_pass': prof.in_pass}
model.release()
"""


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mamba130m")
    ap.add_argument("--weights", default="f32")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prefill", type=int, default=1024)
    ap.add_argument("--pass-per-dispatch", action="store_true",
                    help="time each dispatch in its own pass (py_engine/gpu/native_profile.py) "
                         "instead of stamps between the dispatches of one pass")
    args = ap.parse_args(argv)
    out = {}
    with tempfile.TemporaryDirectory(prefix="mambaweb-prof-") as tmp, NativeEngine() as eng:
        out["adapter"] = eng.info["adapter"]
        for m in args.models.split(","):
            folder = Path(tmp) / m
            _write_random_model(folder, MODEL_CONFIGS[m])
            for fmt in args.weights.split(","):
                out[f"{m}/{fmt}"] = eng.run(SNIPPET, folder=str(folder), fmt=fmt,
                                            tokens=args.tokens, prefill=args.prefill,
                                            in_pass=False if args.pass_per_dispatch else None)
                print(json.dumps({f"{m}/{fmt}": out[f"{m}/{fmt}"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
