"""Measure the npm peer engine `@seanhogg/builderforce-memory-engine` in our headless Chromium.

The peer runs as a user would get it: the package's published ESM build is served from
node_modules (mounted at /peer/), imported by web/bench/peer_bench.html, and driven through
its own public API (`initWebGPU`, `MambaModel`, `forward`, `generate`, `MambaTrainer`) with its
own device setup. The page only instruments WebGPU (buffers created/destroyed, dispatches,
submits, WGSL compile messages, pipeline validation errors, uncaptured errors).

Use from `mambaweb bench`:

    from tools.peer_engine import measure_peer, peer_static
    with headless_engine(use_hf_cache=False, extra_static=peer_static()) as eng:
        report["peer"] = measure_peer(eng)              # or measure_peer(eng, ["d256x4"])

Stand-alone: `python -m tools.peer_engine [--config NAME ...] [--cap-s 60]` prints JSON.

Every workload is capped (default 60 s) and isolated: a failure (exception, WGSL compile error,
validation error, timeout, an unresponsive page) is recorded with its message and the next
workload still runs. Per workload: `ok` (completed within the cap, no GPU error, checks passed),
`completed`, `error`, `timed_out` / `over_cap` (ran past the cap; awaited up to 3x it so its
time is still known), `partial` + `stopped` (decode/train stopped between tokens/steps at the
cap), `skipped` (predicted from measured prefill times to overrun the cap), `gpu_errors`
(count + first distinct messages, each tied to a kernel entry point where WebGPU allows),
`pipelines` (entry points built / failed) and buffer counters. Top level: `errors` (every
distinct GPU error / WGSL message by workload), `failures` (one line per failed workload),
`console` (the page's console errors and warnings).
"""
import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "@seanhogg/builderforce-memory-engine"
PINNED_VERSION = "2026.7.14"
PACKAGE_DIR = REPO / "node_modules" / "@seanhogg" / "builderforce-memory-engine"
MOUNT = "/peer"
PAGE = "/static/bench/peer_bench.html"
CAP_S = 60
TRAIN_CAP_STRETCH = 3
HARD_CAP_FACTOR = 3    # past the cap a workload is awaited (and timed) up to 3x it: see peer_bench.mjs
MIXERS = ("mamba1", "mamba2", "mamba3", "attention")   # HybridMambaModel layer types

# Workloads per config (Mamba-1, d_state 16, d_conv 4, expand 2, random weights). d256x4 uses
# our `micro` preset's vocab (tools/init_weights.py); mamba130m is mamba-130m's shape with the
# GPT-NeoX vocab padded to 50280. Pass configs={name: {...overrides}} to change any of it.
DEFAULT_CONFIGS = {
    "d256x4": {
        "d_model": 256, "n_layer": 4, "vocab_size": 6144,
        "prefill": [64, 256, 1024],
        "decode": {"prompt_lens": [16, 256], "new_tokens": 16},
        "train": {"batch": 4, "seq_len": 128, "steps": 8, "lr": 1e-3},
    },
    "mamba130m": {
        "d_model": 768, "n_layer": 24, "vocab_size": 50280,
        "prefill": [64, 256, 1024],
        "decode": {"prompt_lens": [16, 256], "new_tokens": 8},
        "train": None,
    },
}


def peer_static():
    """extra_static for headless_engine/create_app: the package folder mounted at /peer."""
    if not (PACKAGE_DIR / "package.json").is_file():
        raise RuntimeError(f"{PACKAGE} is not installed at {PACKAGE_DIR}: run `npm ci` in the "
                           "repo root (it is a devDependency)")
    return {MOUNT: str(PACKAGE_DIR)}


class PeerPage:
    """The bench page in its own tab of the given browser; reopened if it stops responding."""

    def __init__(self, browser, base_url, pkg_url=MOUNT + "/"):
        self.browser, self.base_url, self.pkg_url = browser, base_url, pkg_url
        self.page = None
        self.label = "load"
        self.console = []          # {workload, type, text}
        self.ids = itertools.count(1)
        self.dead = None           # why the page could not be reopened, if it could not
        self.info = self.open()

    def open(self):
        self.page = self.browser.new_page()
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda e: self._log("pageerror", str(e)))
        self.page.on("crash", lambda *_: self._log("crash", "the bench page crashed"))
        self.page.goto(f"{self.base_url}{PAGE}?pkg={self.pkg_url}")
        self.page.wait_for_function("document.body.dataset.peer !== 'loading'", timeout=60_000)
        return self.page.evaluate("window.peerInfo")

    def _log(self, kind, text):
        self.console.append({"workload": self.label, "type": kind, "text": text[:2000]})

    def _on_console(self, msg):
        if msg.type in ("error", "warning"):
            self._log(msg.type, msg.text)

    def gc(self):
        try:
            cdp = self.page.context.new_cdp_session(self.page)
            cdp.send("HeapProfiler.collectGarbage")
            cdp.detach()
        except Exception:  # noqa: BLE001 - best effort
            pass

    def call(self, label, method, args, cap_s):
        """Run window.peer[method](...args); the page itself enforces cap_s (awaiting an
        overrunning call up to HARD_CAP_FACTOR x cap_s); the host waits a little longer than
        that and, if the page is wedged, abandons it and opens a fresh one."""
        if self.dead:
            return {"completed": False, "ok": False, "error": self.dead}
        self.label = label
        job = next(self.ids)
        t0 = time.time()
        try:
            self.page.evaluate("([i, m, a]) => window.peer.start(i, m, a)", [job, method, args])
            self.page.wait_for_function(f"window.__peerResults && ({job} in window.__peerResults)",
                                        polling=200, timeout=(cap_s * HARD_CAP_FACTOR + 30) * 1000)
            res = self.page.evaluate(f"window.peer.take({job})")
        except Exception as e:  # noqa: BLE001 - a hung/crashed page must not stop the bench
            msg = (f"page unresponsive or crashed after {time.time() - t0:.0f} s: "
                   f"{type(e).__name__}: {str(e)[:300]}")
            self._log("host", msg)
            try:
                self.reopen()
            except Exception as e2:  # noqa: BLE001
                self.dead = f"bench page could not be reopened: {type(e2).__name__}: {e2}"
            return {"completed": False, "ok": False, "timed_out": True, "error": msg,
                    "page_reopened": True}
        finally:
            self.label = "idle"
        if not res["ok"]:
            return {"completed": False, "ok": False, "error": res["error"]}
        return res["value"]

    def reopen(self):
        try:
            self.page.close(run_before_unload=False)
        except Exception:  # noqa: BLE001
            pass
        self.info = self.open()

    def close(self):
        try:
            self.page.close()
        except Exception:  # noqa: BLE001
            pass


def _slope(points):
    """Least-squares slope and intercept of ms vs position."""
    if len(points) < 2:
        return None, None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None, None
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return k, my - k * mx


def _resolve_configs(configs):
    if configs is None:
        return dict(DEFAULT_CONFIGS)
    if isinstance(configs, dict):
        return {k: ({**DEFAULT_CONFIGS.get(k, {}), **v} if isinstance(v, dict) else DEFAULT_CONFIGS[k])
                for k, v in configs.items()}
    return {name: DEFAULT_CONFIGS[name] for name in configs}


def _measure_config(pp, name, cfg, cap_s):
    spec = {k: cfg[k] for k in ("d_model", "n_layer", "vocab_size") if k in cfg}
    for k in ("d_state", "d_conv", "expand", "seed"):
        if k in cfg:
            spec[k] = cfg[k]
    out = {"spec": spec}
    cap_ms = cap_s * 1000
    out["init"] = pp.call(f"{name}/init", "init", [name, spec, cap_ms], cap_s)

    # A workload that overruns the cap leaves the package's GPU work in flight, which would
    # slow every later workload; so a workload whose forward passes are predicted (from the
    # prefill times measured so far, linear in tokens) to overrun it is skipped and says why.
    measured = {}      # tokens -> forward ms

    def estimate_ms(n):
        if not measured:
            return None
        below = [m for m in measured if m <= n]
        base = max(below) if below else min(measured)
        return measured[base] * n / base

    def skipped(what, est):
        return {"completed": False, "ok": False, "skipped":
                f"not run: {what} is estimated at {est / 1000:.0f} s from the measured prefill "
                f"times, over the {cap_s:g} s cap", "estimated_ms": round(est)}

    runs, skip = {}, None
    for n in cfg.get("prefill", []):
        est = estimate_ms(n)
        if skip:
            runs[str(n)] = {"completed": False, "ok": False, "skipped": skip}
            continue
        if est is not None and est > 0.9 * cap_ms:
            runs[str(n)] = skipped(f"a forward over {n} tokens", est)
            skip = f"not run: the {n}-token prefill was already predicted to overrun the cap"
            continue
        r = pp.call(f"{name}/prefill{n}", "prefill", [name, spec, n, cap_ms], cap_s)
        runs[str(n)] = r
        pp.gc()
        if r.get("ms"):
            measured[n] = r["ms"]
        elif r.get("timed_out"):     # abandoned: it took at least the hard cap
            measured[n] = cap_ms * HARD_CAP_FACTOR
            skip = (f"not run: prefill of {n} tokens was abandoned at "
                    f"{cap_s * HARD_CAP_FACTOR:g} s")
    out["prefill"] = {
        "ok": bool(runs) and all(r.get("ok") for r in runs.values()),
        "partial": any(r.get("skipped") or r.get("timed_out") for r in runs.values()),
        "tokens_per_s": {k: r.get("tokens_per_s") for k, r in runs.items()},
        "by_len": runs,
    }

    # Causality (last token changed -> earlier logits unchanged) and sequence mixing (first
    # token changed -> later logits change): three forwards over n_causal tokens.
    n_causal = cfg.get("causality_tokens", 32)
    est = estimate_ms(n_causal)
    if est is not None and 3 * est > 0.9 * cap_ms:
        out["causality"] = skipped(f"3 forwards over {n_causal} tokens", 3 * est)
    else:
        out["causality"] = pp.call(f"{name}/causality", "causality",
                                   [name, spec, n_causal, cap_ms], cap_s)

    dec = cfg.get("decode")
    if dec:
        runs = {}
        for p in dec["prompt_lens"]:
            est = estimate_ms(p)
            if est is not None and est > 0.9 * cap_ms:
                runs[f"p{p}"] = skipped(f"the first decode step (a forward over {p} tokens)", est)
                continue
            runs[f"p{p}"] = pp.call(f"{name}/decode_p{p}", "decode",
                                    [name, spec, p, dec["new_tokens"], cap_ms], cap_s)
            pp.gc()
        points = []
        for r in runs.values():
            if r.get("per_token"):
                points += [(t["pos"], t["ms"]) for t in r["per_token"]]
            else:   # stopped at the cap: the forward calls made so far
                points += [(c["seq_len"], c["forward_ms"]) for c in r.get("forward_calls") or []]
        k, b = _slope(points)
        reruns = [r.get("reruns_full_sequence") for r in runs.values()
                  if r.get("reruns_full_sequence") is not None]
        out["decode"] = {
            "ok": all(r.get("ok") for r in runs.values()),
            "partial": any(r.get("partial") or r.get("skipped") for r in runs.values()),
            "tokens_per_s": {k_: r.get("tokens_per_s") for k_, r in runs.items()},
            "reruns_full_sequence": all(reruns) if reruns else None,
            "ms_per_token_vs_position": {
                "slope_ms_per_position": round(k, 4) if k is not None else None,
                "intercept_ms": round(b, 2) if b is not None else None,
                "points": sorted(points),
                "note": "O(1) decode has slope ~0; a slope > 0 means each token re-runs the sequence",
            },
            "by_prompt": runs,
        }
    # Training: a loss trend needs at least two steps, so its cap may stretch to fit two
    # predicted steps (up to TRAIN_CAP_STRETCH x the cap); a single step far beyond the cap is skipped.
    tr = cfg.get("train")
    est = estimate_ms(tr["batch"] * tr["seq_len"]) if tr else None
    if tr and est is not None and est > 1.2 * cap_ms:
        out["train"] = skipped(f"one step (a forward over batch {tr['batch']} x "
                               f"{tr['seq_len']} positions)", est)
    elif tr:
        train_cap = cap_s if est is None else max(cap_s, min(TRAIN_CAP_STRETCH * cap_s, 2.5 * est / 1000))
        out["train"] = pp.call(f"{name}/train", "train", [name, spec, tr, train_cap * 1000], train_cap)
        out["train"]["cap_s"] = round(train_cap, 1)
    else:
        out["train"] = {"skipped": "training is measured on d256x4 only", "ok": None}
    if not pp.dead:
        pp.page.evaluate("(n) => window.peer.dropModel(n)", name)
        pp.gc()
    return out


def _failures(report):
    """One line per failed workload, with its first error messages."""
    lines = []
    sections = dict(report["configs"])
    if report.get("mixers"):
        sections["mixers"] = dict(report["mixers"])
    for cname, c in sections.items():
        flat = {k: v for k, v in c.items() if k not in ("spec", "prefill", "decode")}
        for k, r in (c.get("prefill", {}).get("by_len") or {}).items():
            flat[f"prefill{k}"] = r
        for k, r in (c.get("decode", {}).get("by_prompt") or {}).items():
            flat[f"decode_{k}"] = r
        for w, r in flat.items():
            if not isinstance(r, dict) or r.get("ok") is None or r.get("ok"):
                continue
            why = []
            if r.get("skipped"):
                why.append(r["skipped"])
            if r.get("error"):
                why.append(r["error"])
            errs = (r.get("gpu_errors") or {})
            if errs.get("total"):
                roots = [e["message"].split("\n")[0][:300] for e in errs.get("first") or []
                         if "due to a previous error" not in e["message"]
                         and "Error while parsing WGSL" not in e["message"]][:3]
                why.append(f"{errs['total']} GPU errors ({errs['distinct']} distinct)"
                           + (": " + " / ".join(roots) if roots else ""))
            why += r.get("notes") or []
            lines.append(f"{cname}/{w}: " + "; ".join(why or ["failed"]))
    return lines


def measure_peer(handle, configs=None, cap_s=CAP_S, mixers=True):
    """Run the peer engine's workloads in a new tab of handle.browser (handle.server.url must
    serve /peer/ — create the server with extra_static=peer_static()). Returns a JSON-able dict:
    {version, package, mixers, configs: {name: {init, causality, prefill, decode, train}},
    errors, failures, ...}. mixers: also build one tiny layer of each advertised mixer type."""
    t0 = time.time()
    report = {"package": PACKAGE, "pinned_version": PINNED_VERSION, "version": None,
              "cap_s_per_workload": cap_s, "host_load_avg_start": _load(),
              "configs": {}, "errors": [], "failures": []}
    try:
        report["browser"] = handle.browser.version
    except Exception:  # noqa: BLE001
        pass
    try:
        pp = PeerPage(handle.browser, handle.server.url)
    except Exception as e:  # noqa: BLE001
        report["errors"].append({"workload": "load", "kind": "page",
                                 "message": f"{type(e).__name__}: {e}", "count": 1})
        report["failures"].append(f"bench page did not load: {e}")
        return report
    try:
        info = pp.info or {}
        report["version"] = info.get("version")
        report["import"] = info
        if info.get("error"):
            report["errors"].append({"workload": "load", "kind": "import",
                                     "message": info["error"], "count": 1})
            report["failures"].append(f"import of {PACKAGE} failed: {info['error']}")
            return report
        if mixers:
            report["mixers"] = {t: pp.call(f"mixers/{t}", "mixer", [t, cap_s * 1000], cap_s)
                                for t in MIXERS}
        for name, cfg in _resolve_configs(configs).items():
            try:
                report["configs"][name] = _measure_config(pp, name, cfg, cap_s)
            except Exception as e:  # noqa: BLE001 - the harness itself failed; say so, go on
                report["configs"][name] = {"error": f"harness: {type(e).__name__}: {e}"}
                report["failures"].append(f"{name}: harness error {type(e).__name__}: {e}")
        try:
            report["device_requests"] = pp.page.evaluate("window.peer.devices()")[:1]
            report["errors"] = pp.page.evaluate("window.peer.errors()")
        except Exception as e:  # noqa: BLE001
            report["errors"].append({"workload": "report", "kind": "page",
                                     "message": f"{type(e).__name__}: {e}", "count": 1})
        report["console"] = _dedupe(pp.console)
    finally:
        pp.close()
    report["failures"] = report["failures"] + _failures(report)
    report["host_load_avg_end"] = _load()
    report["wall_s"] = round(time.time() - t0, 1)
    return _clean(report)


def _clean(obj):
    """Strict-JSON-able: NaN/Infinity (e.g. a NaN loss) become the strings 'NaN'/'Infinity'."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _load():
    """1-minute load average and CPU count: SwiftShader timings mean little on a busy host."""
    try:
        return {"load1": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    except OSError:
        return None


def _dedupe(entries, limit=60):
    seen, out = {}, []
    for e in entries:
        key = (e["workload"], e["type"], e["text"])
        if key in seen:
            seen[key]["count"] += 1
            continue
        if len(out) >= limit:
            continue
        rec = {**e, "count": 1}
        seen[key] = rec
        out.append(rec)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=f"measure {PACKAGE} in headless Chromium (prints JSON)")
    ap.add_argument("--config", action="append", choices=sorted(DEFAULT_CONFIGS),
                    help="configs to run (repeatable; default all)")
    ap.add_argument("--cap-s", type=float, default=CAP_S, help="time cap per workload (s)")
    ap.add_argument("--indent", type=int, default=None)
    args = ap.parse_args(argv)
    from tools.headless import headless_engine
    with headless_engine(use_hf_cache=False, extra_static=peer_static()) as eng:
        report = measure_peer(eng, args.config, cap_s=args.cap_s)
    print(json.dumps(report, indent=args.indent, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
