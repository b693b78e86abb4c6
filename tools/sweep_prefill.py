"""Prefill time of one model under different kernel settings, loaded once (native backend).

  python -m tools.sweep_prefill --models mamba1_4b --prompt 1024 \
      --settings "MAMBAWEB_MATMUL=classic;MAMBAWEB_MATMUL=tiled;MAMBAWEB_SCAN_THREADS=131072"
  python -m tools.sweep_prefill --models mamba1_4b --prompt 1024 --settings \
      "MAMBAWEB_SCAN=classic;MAMBAWEB_SCAN=lanes;MAMBAWEB_SCAN=lanes,MAMBAWEB_SCAN_THREADS=4096"

Each setting is a ;-separated list of environment assignments (comma-separated inside one
setting) that the engine reads per call (the GEMM kernel: MAMBAWEB_MATMUL=classic|tiled; the
Mamba-1 scan's forward kernel: MAMBAWEB_SCAN=lanes|classic, default lanes on a GPU; the
(b, channel, chunk) walks its chunking aims for: MAMBAWEB_SCAN_THREADS, default 16384 for
lanes and 65536 for classic, py_engine/ops/selective_scan.py). Prints JSON lines: per setting
the best of --reps prefills of --prompt tokens (after a warm-up), in tokens/s.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

SNIPPET = """
import os
from py_engine.benchmarks import model as mb
from py_engine.io.hf_loader import load_model_local
model = await load_model_local(device, args['folder'], weights_format=args['fmt'])
out = []
for setting in args['settings']:
    saved = {k: os.environ.get(k) for k in setting}
    os.environ.update(setting)
    device.force_tiled_matmul = None
    device.force_scan_lanes = None      # MAMBAWEB_SCAN decides
    r = await mb.prefill_tokens_per_s(model, args['T'], reps=args['reps'])
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    out.append({'setting': setting, 'tokens_per_s': round(r['tokens_per_s'], 1),
                'ms': round(r['seconds'] * 1e3, 2)})
model.release()
result = out
"""


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mamba1_4b")
    ap.add_argument("--weights", default="f32")
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--settings", default="MAMBAWEB_MATMUL=classic;MAMBAWEB_MATMUL=tiled")
    args = ap.parse_args(argv)
    settings = [dict(kv.split("=", 1) for kv in s.split(",") if kv)
                for s in args.settings.split(";")]
    with tempfile.TemporaryDirectory(prefix="mambaweb-prefill-") as tmp, NativeEngine() as eng:
        for m in args.models.split(","):
            folder = Path(tmp) / m
            _write_random_model(folder, MODEL_CONFIGS[m])
            for fmt in args.weights.split(","):
                for r in eng.run(SNIPPET, folder=str(folder), fmt=fmt, T=args.prompt,
                                 settings=settings, reps=args.reps):
                    print(json.dumps(dict(r, model=m, weights=fmt)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
