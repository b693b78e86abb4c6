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
}


def register(sub):
    p = sub.add_parser("bench", help="benchmark the engine in headless Chromium (prints JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default)")
    p.add_argument("--only", action="append", choices=sorted(SECTIONS),
                   help="run only these sections (repeatable)")
    p.set_defaults(func=run)


def run(args):
    from tools.headless import headless_engine
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with headless_engine(use_hf_cache=False) as eng:
        report["adapter"] = eng.info.get("adapter")
        report["engine_boot_ms"] = eng.info.get("boot_ms")
        for name in args.only or SECTIONS:
            t0 = time.time()
            report[name] = eng.run(SECTIONS[name])
            report[name + "_wall_s"] = round(time.time() - t0, 2)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0
