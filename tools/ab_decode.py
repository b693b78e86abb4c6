"""Decode kernel settings side by side on one loaded model: each setting's GPU ms per token
(py_engine/benchmarks/model.decode_tokens_per_s: a queued group's wait less an idle readback)
and streamed tok/s, the settings interleaved round by round -- in reverse order every other
round -- so that slow drift on the device (a read ceiling that moved 4,000-4,500 GB/s between
calls) is spread over all of them rather than falling on whichever runs last.

  python -m tools.ab_decode --dawn --models mamba1_4b --weights f16,q4 --tokens 128 \\
      --rounds 2 --setting base:matvec_stage=1 --setting nostage:matvec_stage=0 \\
      --setting plan:MAMBAWEB_MATVEC_PLAN=4096x2048=2/16/-

A setting is NAME:ATTR=VALUE[,ATTR=VALUE]: device attributes the engine's choices read
(py_engine/gpu/settings.py: `device.<attr>` before the environment and the rule), set for that
setting's runs and restored after (to what they were, set or not); an ATTR in capitals is an
environment variable of the engine instead (Pyodide's own under --dawn), such as
MAMBAWEB_MATVEC_PLAN. A name the engine's sources never mention is refused (a typo would
otherwise measure the rule under another name). One model load per shape and format (a 1.4b
load through Dawn is most of a bench variant's time). --dawn runs the tab's code path (Pyodide
under Node on Chrome's WebGPU), else the native backend. Prints one JSON line per model and
format."""
import argparse
import functools
import json
import re
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
UNSET = object()
try:
    for r in range(args['rounds']):
        order = args['settings'] if r % 2 == 0 else args['settings'][::-1]
        for name, attrs in order:
            before = {}                      # what each key held, recorded once it is set
            try:
                for k, v in attrs.items():
                    if k.isupper():
                        old = os.environ.get(k, UNSET)
                        os.environ[k] = str(v)
                    else:
                        old = vars(device)[k] if k in vars(device) else UNSET
                        setattr(device, k, v)
                    before[k] = old
                d = await mb.decode_tokens_per_s(model, args['tokens'])
            finally:
                errors = []
                for k, old in before.items():    # each key put back on its own
                    try:
                        if k.isupper():
                            if old is UNSET:
                                os.environ.pop(k, None)
                            else:
                                os.environ[k] = old
                        elif old is UNSET:
                            delattr(device, k)
                        else:
                            setattr(device, k, old)
                    except Exception as e:
                        errors.append(f"{k}: {e}")
                if errors:
                    raise RuntimeError("ab_decode could not restore " + "; ".join(errors))
            rows[name].append({'gpu_ms_per_token': round(d['gpu_ms_per_token'], 4),
                               'tokens_per_s': round(d['tokens_per_s'], 1),
                               'dispatches_per_token': d['dispatches_per_token']})
finally:
    model.release()
result = {name: {'gpu_ms_per_token_best': min(r['gpu_ms_per_token'] for r in runs),
                 'runs': runs} for name, runs in rows.items()}
"""


@functools.lru_cache(maxsize=None)
def _engine_source(root=None):
    """py_engine's Python sources as one text (read once: every --setting consults them)."""
    root = Path(root or Path(__file__).resolve().parents[1] / "py_engine")
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))


def numeric_attrs(root=None):
    """The device attributes the engine reads as numbers (py_engine's pick(...) calls: each
    must be one of its allowed ints); every other attribute is an on/off choice."""
    return set(re.findall(r'\bpick\([^,()]+, "([a-z_0-9]+)"', _engine_source(root)))


def parse_setting(text):
    """NAME:ATTR=VALUE[,ATTR=VALUE] -> (name, {attr: value}). An environment variable (ATTR in
    capitals) keeps its text as given. A device attribute the engine reads as a number
    (numeric_attrs) takes an int; any other is an on/off choice: 1/true/on or 0/false/off,
    made a bool -- the engine tests some with `is False` / `is not True`, where 0 and 1 would
    quietly leave the rule in force, and others with bool(), where the text "off" is true. A
    malformed one is refused by name (argparse prints the message)."""
    def bad(why):
        return argparse.ArgumentTypeError(f"--setting {text!r}: {why}")
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise bad("expected NAME:ATTR=VALUE[,ATTR=VALUE]")
    numeric = numeric_attrs()
    attrs = {}
    for part in rest.split(","):
        k, eq, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not eq or not k or not v:
            raise bad(f"{part!r} is not ATTR=VALUE")
        if not (k.isascii() and k.isidentifier() and (k.isupper() or k.islower())):
            raise bad(f"{k!r} is neither a device attribute (lower case) nor an environment "
                      "variable (capitals)")
        if k in attrs:
            raise bad(f"{k} given twice")
        if k.islower() and k in numeric:
            try:
                v = int(v)
            except ValueError:
                raise bad(f"{k} takes a whole number, got {v!r}") from None
        elif k.islower():
            on = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
            if v.lower() not in on:
                raise bad(f"{k} is an on/off choice: 1/true/on or 0/false/off, got {v!r}")
            v = on[v.lower()]
        attrs[k] = v
    return name, attrs


def unknown_names(settings, root=None):
    """The attribute and environment variable names of `settings` that no source file of
    py_engine mentions in quotes: the engine cannot be reading them (a guard against typos; a
    name that is mentioned may still not be a setting)."""
    text = _engine_source(root)
    names = {k for _, attrs in settings for k in attrs}
    return sorted(k for k in names if f'"{k}"' not in text and f"'{k}'" not in text)


def positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv=None):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mamba130m")
    ap.add_argument("--weights", default="f16")
    ap.add_argument("--tokens", type=positive, default=128)
    ap.add_argument("--rounds", type=positive, default=2)
    ap.add_argument("--setting", action="append", required=True, type=parse_setting)
    ap.add_argument("--dawn", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n, _ in args.setting]
    if len(set(names)) != len(names):
        ap.error(f"--setting names must differ: {', '.join(names)}")
    unknown = unknown_names(args.setting)
    if unknown:
        ap.error(f"no engine source reads {', '.join(unknown)}: a typo? (device attributes: "
                 "py_engine/gpu/settings.py's choose/pick calls; environment: MAMBAWEB_*)")
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
