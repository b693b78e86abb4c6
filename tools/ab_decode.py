"""Decode kernel settings side by side on one loaded model: each setting's GPU ms per token
(py_engine/benchmarks/model.decode_tokens_per_s: a queued group's wait less an idle readback)
and streamed tok/s, the settings interleaved round by round so that drift on the device (a
read ceiling that moved 4,000-4,500 GB/s between calls) falls on all of them alike.

  python -m tools.ab_decode --dawn --models mamba1_4b --weights f16,q4 --tokens 128 \\
      --rounds 2 --setting off:matvec_warm=0 --setting w256:matvec_warm=256

A setting is NAME:ATTR=VALUE[,ATTR=VALUE]: device attributes the engine's choices read
(py_engine/gpu/settings.py: `device.<attr>` before the environment and the rule), set for that
setting's runs and unset after; an ATTR in capitals is an environment variable of the engine
instead (Pyodide's own under --dawn), such as MAMBAWEB_MATVEC_PLAN. One model load per shape and format (a 1.4b load through Dawn
is most of a bench variant's time). --dawn runs the tab's code path (Pyodide under Node on
Chrome's WebGPU), else the native backend. Prints one JSON line per model and format."""
import argparse
import json
import sys
import tempfile
from pathlib import Path

SNIPPET = """
from py_engine.benchmarks import model as mb
from py_engine.io.hf_loader import load_model, load_model_local
if args.get('url'):
    model = await load_model(device, args['url'], weights_format=args['fmt'])
else:
    model = await load_model_local(device, args['folder'], weights_format=args['fmt'])
import os
rows = {name: [] for name, _ in args['settings']}
try:
    for _ in range(args['rounds']):
        for name, attrs in args['settings']:
            for k, v in attrs.items():
                if k.isupper():
                    os.environ[k] = str(v)
                else:
                    setattr(device, k, v)
            try:
                d = await mb.decode_tokens_per_s(model, args['tokens'])
            finally:
                for k in attrs:
                    if k.isupper():
                        os.environ.pop(k, None)
                    else:
                        setattr(device, k, None)
            rows[name].append({'gpu_ms_per_token': round(d['gpu_ms_per_token'], 4),
                               'tokens_per_s': round(d['tokens_per_s'], 1),
                               'dispatches_per_token': d['dispatches_per_token']})
finally:
    model.release()
result = {name: {'gpu_ms_per_token_best': min(r['gpu_ms_per_token'] for r in runs),
                 'runs': runs} for name, runs in rows.items()}
"""


def parse_setting(text):
    """NAME:ATTR=VALUE[,ATTR=VALUE] -> (name, {attr: int, float or str})."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise ValueError(f"--setting {text!r}: expected NAME:ATTR=VALUE[,ATTR=VALUE]")
    attrs = {}
    for part in rest.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k:
            raise ValueError(f"--setting {text!r}: {part!r} is not ATTR=VALUE")
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        attrs[k.strip()] = v
    return name, attrs


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mamba130m")
    ap.add_argument("--weights", default="f16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--setting", action="append", required=True, type=parse_setting)
    ap.add_argument("--dawn", action="store_true")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="mambaweb-ab-") as tmp:
        for m in models:
            _write_random_model(Path(tmp) / m, MODEL_CONFIGS[m])
        if args.dawn:
            from tools.dawn_engine import DawnEngine
            eng = DawnEngine(model_dirs=[tmp])
        else:
            from tools.native_engine import NativeEngine
            eng = NativeEngine()
        with eng:
            print(json.dumps({"adapter": eng.info.get("adapter")}), flush=True)
            for m in models:
                where = ({"url": f"{eng.server.url}/weights/{m}/"} if args.dawn
                         else {"folder": str(Path(tmp) / m)})
                for fmt in args.weights.split(","):
                    r = eng.run(SNIPPET, fmt=fmt, tokens=args.tokens, rounds=args.rounds,
                                settings=args.setting, timeout=3000, **where)
                    print(json.dumps({f"{m}/{fmt}": r}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
