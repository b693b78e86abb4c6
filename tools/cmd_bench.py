"""`mambaweb bench`: measure the engine in headless Chromium and print JSON.

Sections run in one browser session, one after another; each section is a coroutine in
py_engine/benchmarks run inside the page's engine.
"""
import json
import platform
import sys
import time

SECTIONS = {
    "foundation": "from py_engine.benchmarks import foundation\nresult = await foundation.run_all(device)",
    "model": "model",
}
# The two model shapes of the bench: small, and mamba-130m's (random weights, bf16 on disk).
MODEL_CONFIGS = {
    "d256x4": dict(d_model=256, n_layers=4, vocab_size=50280, prompts=(64, 256, 1024), decode=32),
    "mamba130m": dict(d_model=768, n_layers=24, vocab_size=50280, prompts=(64, 256, 1024), decode=8),
}
MODEL_SNIPPET = """
from py_engine.benchmarks import model as mb
result = await mb.run(device, args['url'], prompts=args['prompts'], decode_tokens=args['decode'],
                      max_seconds=args['max_seconds'])
"""
COLD_SNIPPET = """
import time
from py_engine.app import generate_session as s
t0 = time.perf_counter()
await s.load(args['url'], 'bench')
r = await s.generate(ids=[1, 2, 3, 4], max_new_tokens=1, sampling={'greedy': True})
s.unload()
result = {'load_and_first_token_s': time.perf_counter() - t0}
"""


def register(sub):
    p = sub.add_parser("bench", help="benchmark the engine in headless Chromium (prints JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default)")
    p.add_argument("--only", action="append", choices=sorted(SECTIONS),
                   help="run only these sections (repeatable)")
    p.add_argument("--models", default=",".join(MODEL_CONFIGS),
                   help="model shapes for the model section (comma-separated)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="per model shape, stop starting longer prefills after this much time")
    p.set_defaults(func=run)


def run(args):
    from tools.headless import headless_engine
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    import tempfile
    from pathlib import Path
    tmp = tempfile.TemporaryDirectory(prefix="mambaweb-bench-")
    sections = args.only or list(SECTIONS)
    if "model" in sections:
        for name in args.models.split(","):
            _write_random_model(Path(tmp.name) / name, MODEL_CONFIGS[name])
    with headless_engine(model_dirs=[tmp.name], use_hf_cache=False) as eng:
        report["adapter"] = eng.info.get("adapter")
        report["engine_boot_ms"] = eng.info.get("boot_ms")
        for name in sections:
            t0 = time.time()
            if name == "model":
                report[name] = _model_section(eng, args)
            else:
                report[name] = eng.run(SECTIONS[name])
            report[name + "_wall_s"] = round(time.time() - t0, 2)
    tmp.cleanup()
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _write_random_model(folder, c):
    """Reference-initialised random weights (what generate-bin writes), bf16 on disk."""
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    cfg = make_config("nano", hidden_size=c["d_model"], num_hidden_layers=c["n_layers"],
                      vocab_size=c["vocab_size"])
    convert_host.write_hf(folder, cfg, init_weights(cfg, 0), "BF16")


def _model_section(eng, args):
    out = {}
    for name in args.models.split(","):
        c = MODEL_CONFIGS[name]
        url = f"{eng.server.url}/weights/{name}/"
        r = eng.run(MODEL_SNIPPET, url=url, prompts=list(c["prompts"]), decode=c["decode"],
                    max_seconds=args.max_seconds)
        # time to first token from a cold page: a new tab boots Pyodide + the engine + the model
        t0 = time.time()
        from tools.headless import open_engine_page
        page = open_engine_page(eng.browser, eng.server.url, "/convert")
        cold = page.run(COLD_SNIPPET, url=url)
        r["cold_page_first_token_s"] = round(time.time() - t0, 3)
        r["cold_model_load_and_first_token_s"] = cold["load_and_first_token_s"]
        page.page.close()
        out[name] = r
    return out
