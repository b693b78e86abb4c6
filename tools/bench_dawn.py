"""`mambaweb bench --dawn`: the bench's GPU sections through the tab's own code path (Pyodide +
py_engine/gpu/browser.py + web/js/gpu_bridge.mjs) on Chrome's WebGPU (Dawn) under Node.js,
with no browser: on a real GPU these are the numbers a Chrome tab gets. Same sections, same
snippets and the same JSON as the browser run, with "backend": "dawn" and the adapter info;
`--variant NAME:VAR=VALUE` runs each model again with those variables set in the engine's own
(Pyodide's) environment, in the same process on the same weights, under the model's `variants`."""
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from py_engine.benchmarks.ceilings import annotate_floor, rejudge_ceiling

# the start of each progress line on stderr (progress; tools/bench_summary reads them back)
PROGRESS = "bench --dawn: "
DAWN_SECTIONS = ("foundation", "model", "train", "prefill_gemm", "prefill_ops")   # sections that measure the GPU engine


def run(args):
    from tools.cmd_bench import ASKED_ONLY, CEILINGS_SNIPPET, MODEL_CONFIGS, READ_SNIPPET, \
        SECTIONS, _formats, _write_random_model
    from tools.dawn_engine import DawnEngine, DawnUnavailable, dawn_problem
    problem = dawn_problem()          # before writing models: say what is missing at once
    if problem is not None:
        print(f"bench --dawn: {problem}", file=sys.stderr)
        return 1
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": "dawn"}
    sections = args.only or [s for s in SECTIONS if s in DAWN_SECTIONS and s not in ASKED_ONLY]
    models = args.models.split(",") if "model" in sections else []
    unknown = [m for m in models if m not in MODEL_CONFIGS]
    if unknown:
        print(f"bench: unknown model shape(s) {', '.join(unknown)} in --models; known: "
              f"{', '.join(MODEL_CONFIGS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mambaweb-bench-") as tmp:
        for m in models:
            _write_random_model(Path(tmp) / m, MODEL_CONFIGS[m])
        try:
            eng = DawnEngine(model_dirs=[tmp])
        except DawnUnavailable as e:
            print(f"bench --dawn: {e}", file=sys.stderr)
            return 1
        with eng:
            report["adapter"] = eng.info.get("adapter")
            report["vulkan_icd"] = eng.info.get("vulkan_icd")
            report["node"] = eng.info.get("node")
            report["engine_boot_ms"] = eng.info.get("boot_ms")
            report["engine_boot_split_ms"] = eng.info.get("boot_split_ms")   # Pyodide, zip, imports, GPU
            # the device's own ceilings first, as --native: every decode number is judged on them
            report["ceilings"] = eng.run(CEILINGS_SNIPPET)
            progress("ceilings", report["ceilings"])
            ceiling = report["ceilings"]["read"]["gb_per_s"]
            for name in sections:
                t0 = time.time()
                if name == "model":
                    report[name] = {m: _model(eng, m, MODEL_CONFIGS[m], args, _formats(args),
                                              ceiling) for m in models}
                elif name in DAWN_SECTIONS:
                    report[name] = eng.run(SECTIONS[name])
                else:
                    report[name] = "browser-only section: run `mambaweb bench` without --dawn"
                report[name + "_wall_s"] = round(time.time() - t0, 2)
            if "model" in sections:   # the ceiling again: the decodes judged on the best of both
                rejudge_ceiling(report, eng.run(READ_SNIPPET))
    annotate_floor(report)       # each decode's GPU time against the device's floor
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def progress(what, result):
    """One line on stderr as each part of the run finishes -- `bench --dawn: WHAT {json}` -- so
    that a run stopped by a timeout (a lent GPU machine's command limit) keeps what it measured:
    stdout gets the whole report only at the end."""
    print(f"{PROGRESS}{what} {json.dumps(result)}", file=sys.stderr, flush=True)


def _model_formats(eng, url, c, args, formats, ceiling, what):
    """The browser run's model section (benchmarks/model.run: the first format's numbers at the
    top level, every format's under "formats"), one format at a time, each reported as it ends."""
    from tools.cmd_bench import MODEL_SNIPPET
    r = None
    for fmt in formats:
        one = eng.run(MODEL_SNIPPET, url=url, prompts=list(c["prompts"]),
                      decode=args.decode_tokens or c["decode"], max_seconds=args.max_seconds,
                      weights=[fmt], read_gb_per_s=ceiling)
        progress(f"{what} {fmt}", one["formats"][fmt])
        if r is None:
            r = dict(one, formats={})
        r["formats"][fmt] = one["formats"][fmt]
    return r


def _model(eng, name, c, args, formats, ceiling):
    """The browser run's model section, over HTTP from our server; then a second load and
    first token in the same engine (pipelines built: no fresh page to open here)."""
    from tools.cmd_bench import COLD_SNIPPET
    url = f"{eng.server.url}/weights/{name}/"
    r = _model_formats(eng, url, c, args, formats, ceiling, f"model {name}")
    r["model_load_and_first_token_s"] = eng.run(COLD_SNIPPET, url=url)["load_and_first_token_s"]
    for vname, env in getattr(args, "variants", []):
        # the engine's environment is Pyodide's own: set there for this run, restored after
        saved = eng.run(ENV_SNIPPET, env=env)
        try:
            r.setdefault("variants", {})[vname] = _model_formats(
                eng, url, c, args, formats, ceiling, f"model {name} variant {vname}")
        finally:
            eng.run(ENV_SNIPPET, env=saved)
    return r


# Set the engine's (Pyodide's) environment variables in args['env'] (None: unset); result: the
# values they had, in the same form (to restore them).
ENV_SNIPPET = """
import os
result = {k: os.environ.get(k) for k in args['env']}
for k, v in args['env'].items():
    if v is None:
        os.environ.pop(k, None)
    else:
        os.environ[k] = v
"""
