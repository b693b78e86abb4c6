"""`mambaweb bench`: measure the engine in headless Chromium and print JSON.

Sections run in one browser session, one after another; each section is a coroutine in
py_engine/benchmarks run inside the page's engine. `--native` runs the same sections in
CPython with the native backend (wgpu-py: Vulkan/Metal/D3D12) and asyncio instead; `--dawn`
runs them through the tab's code path under Node.js on Chrome's WebGPU (tools/bench_dawn.py).
"""
import json
import os
import platform
import sys
import time

from py_engine.benchmarks.ceilings import annotate_floor, rejudge_ceiling

SECTIONS = {
    "foundation": "from py_engine.benchmarks import foundation\nresult = await foundation.run_all(device)",
    "model": "model",
    "tokenizer": "tokenizer",
    "train": ("from py_engine.benchmarks import train as tb\n"
              "result = await tb.run(device, vocab_size=6144)\n"
              "result['mamba2'] = await tb.run(device, vocab_size=6144, family='mamba2')"),
    "peer": "peer",
    # the prefill's GEMMs alone, 16-byte-staged and scalar-staged tiles side by side
    "prefill_gemm": ("from py_engine.benchmarks import prefill_gemm\n"
                     "result = await prefill_gemm.run(device)"),
    # the prefill's scan and conv alone
    "prefill_ops": ("from py_engine.benchmarks import prefill_ops\n"
                    "result = await prefill_ops.run(device)"),
    # Mamba-3's sequential vs chunked scan forward at the 187m head shape
    "mamba3_scan": ("from py_engine.benchmarks import mamba3_scan\n"
                    "result = await mamba3_scan.run(device)"),
}
# Run only when named by --only: real-GPU shapes (seconds each on a software adapter).
ASKED_ONLY = ("prefill_gemm", "prefill_ops")
# The two model shapes of the bench: small, and mamba-130m's (random weights, bf16 on disk).
MODEL_CONFIGS = {
    "d256x4": dict(d_model=256, n_layers=4, vocab_size=6144, prompts=(64, 256, 1024), decode=32),
    "mamba130m": dict(d_model=768, n_layers=24, vocab_size=50280, prompts=(64, 256, 1024), decode=8),
    # the mamba2-130m shape: d_state 128, head_dim 64 (24 heads), 1 group, chunk 256
    "mamba2_130m": dict(family="mamba2", size="base", d_model=768, n_layers=24, vocab_size=50280,
                        prompts=(64, 256, 1024), decode=8),
    # larger shapes for a real GPU (`--models mamba1_4b,mamba2_1_3b`): too slow for SwiftShader
    "mamba1_4b": dict(d_model=2048, n_layers=48, vocab_size=50280, prompts=(64, 256, 1024),
                      decode=16),
    "mamba2_1_3b": dict(family="mamba2", size="base", d_model=2048, n_layers=48, vocab_size=50280,
                        prompts=(64, 256, 1024), decode=16),
    # a NemotronH-style hybrid at the same scale: 16 Mamba-2, 4 attention (GQA 12/6 heads of 64),
    # 4 relu^2 MLP (3072) layers
    "hybrid_130m": dict(family="hybrid", size="base", d_model=768, n_layers=24, vocab_size=50280,
                        pattern=("MM*M-M" * 4)[:24], prompts=(64, 256, 1024), decode=8),
    # the same with 8 norm groups in its Mamba-2 layers, as real NemotronH checkpoints have
    # (their gated norm folds into out_proj's staging since the thirtieth session)
    "hybrid_130m_g8": dict(family="hybrid", size="base", d_model=768, n_layers=24,
                           vocab_size=50280, pattern=("MM*M-M" * 4)[:24], prompts=(64, 256, 1024),
                           decode=8, overrides=dict(n_groups=8)),
    # a Mamba-3 SISO at mamba-130m's width and depth (d_state 128, head_dim 64, half the state
    # rotated): 130.4M parameters -- "187m" is the name its first runs gave it, kept so the
    # journal's numbers stay findable; it has no MLP blocks
    "mamba3_187m": dict(family="mamba3", size="base", d_model=768, n_layers=24, vocab_size=50280,
                        prompts=(64, 256, 1024), decode=8),
    # the same as MIMO of rank 4 (mamba_ssm's default): its decode step in one dispatch
    # (ops/mamba3_mimo_step) since the thirty-third session
    "mamba3_mimo_187m": dict(family="mamba3", size="base", d_model=768, n_layers=24,
                             vocab_size=50280, prompts=(64, 256, 1024), decode=8,
                             overrides=dict(is_mimo=True, mimo_rank=4)),
    # and with the out-projection norm (a head-wise RMSNorm of each rank's y before its gate),
    # which the one-workgroup-a-head MIMO step folds and the rows form leaves to mamba3_mimo_out
    "mamba3_mimo_onorm_187m": dict(family="mamba3", size="base", d_model=768, n_layers=24,
                                   vocab_size=50280, prompts=(64, 256, 1024), decode=8,
                                   overrides=dict(is_mimo=True, mimo_rank=4,
                                                  is_outproj_norm=True)),
}
DEFAULT_MODELS = "d256x4,mamba130m,mamba2_130m,hybrid_130m"
MODEL_SNIPPET = """
from py_engine.benchmarks import model as mb
result = await mb.run(device, args['url'], prompts=args['prompts'], decode_tokens=args['decode'],
                      max_seconds=args['max_seconds'],
                      weights_formats=args.get('weights') or ('f32',),
                      read_gb_per_s=args.get('read_gb_per_s'))
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
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="model shapes for the model section (comma-separated)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="per model shape, stop starting longer prefills after this much time")
    p.add_argument("--decode-tokens", type=int, default=None,
                   help="decode this many tokens per model shape (default: per shape, 32 / 8)")
    p.add_argument("--weights", default="f32",
                   help="weight formats to measure the model shapes in (comma-separated: "
                        "f32,f16,bf16,q8,q4)")
    p.add_argument("--native", action="store_true",
                   help="run in CPython on the native backend (wgpu-py) instead of headless Chromium")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]",
                   help="--native or --dawn: also run each model under these environment "
                        "settings (kernel choices such as MAMBAWEB_MATVEC_STAGE=0; with --dawn set "
                        "in the engine's Pyodide), in the same process on the same weights, "
                        "reported under the model's `variants`")
    p.add_argument("--dawn", action="store_true",
                   help="run the tab's code path under Node.js on Chrome's WebGPU (Dawn, npm "
                        "`webgpu`) instead of headless Chromium (tools/bench_dawn.py)")
    p.set_defaults(func=run)


def run(args):
    if args.native and args.dawn:
        print("bench: choose one of --native and --dawn", file=sys.stderr)
        return 2
    if args.variant and not (args.native or args.dawn):
        print("bench: --variant needs --native or --dawn (the browser's engine runs in a tab, "
              "out of reach of environment settings)", file=sys.stderr)
        return 2
    try:
        args.variants = [_parse_variant(v) for v in args.variant]
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    if args.native:
        return _run_native(args)
    if args.dawn:
        return _run_dawn(args)
    from tools.headless import headless_engine
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    import tempfile
    from pathlib import Path
    tmp = tempfile.TemporaryDirectory(prefix="mambaweb-bench-")
    sections = args.only or [s for s in SECTIONS if s not in ASKED_ONLY]
    if "model" in sections:
        for name in args.models.split(","):
            _write_random_model(Path(tmp.name) / name, MODEL_CONFIGS[name])
    from tools.peer_engine import peer_static
    with headless_engine(model_dirs=[tmp.name], use_hf_cache=False,
                         extra_static=peer_static()) as eng:
        report["adapter"] = eng.info.get("adapter")
        report["engine_boot_ms"] = eng.info.get("boot_ms")
        report["engine_boot_split_ms"] = eng.info.get("boot_split_ms")   # Pyodide, zip, imports, GPU
        for name in sections:
            t0 = time.time()
            if name == "model":
                report[name] = _model_section(eng, args)
            elif name == "tokenizer":
                report[name] = _tokenizer_section(eng)
            elif name == "peer":
                from tools.peer_engine import measure_peer
                report[name] = measure_peer(eng)
                report["ratios_vs_peer"] = _ratios(report)
            else:
                report[name] = eng.run(SECTIONS[name])
            report[name + "_wall_s"] = round(time.time() - t0, 2)
    tmp.cleanup()
    annotate_floor(report)       # each decode's GPU time against the device's floor
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _parse_variant(text):
    """'stage0:MAMBAWEB_MATVEC_STAGE=0,MAMBAWEB_SSD_STEP=rows' -> ('stage0', {VAR: VALUE})."""
    name, sep, rest = text.partition(":")
    pairs = [kv.partition("=") for kv in rest.split(",") if kv]
    if not sep or not name or not pairs or any(not k or not eq for k, eq, _ in pairs):
        raise ValueError(f"--variant {text!r}: expected NAME:VAR=VALUE[,VAR=VALUE...]")
    return name, {k: v for k, _, v in pairs}


def _environ(env):
    """os.environ updated with env for the block, restored after."""
    from unittest import mock
    return mock.patch.dict(os.environ, env)


def _run_dawn(args):
    from tools import bench_dawn
    return bench_dawn.run(args)


def _ratios(report):
    """Ours / the npm peer engine's, where both measured the same config in this run (the
    peer's numbers are for a model whose mixers failed to compile: see report["peer"])."""
    out = {}
    ours = report.get("model", {})
    for name, p in (report.get("peer", {}).get("configs") or {}).items():
        o = ours.get(name)
        if not isinstance(o, dict):
            continue
        r = {}
        mine_pre = {str(x.get("prompt")): x.get("tokens_per_s") for x in o.get("prefill", [])}
        for n, v in ((p.get("prefill") or {}).get("tokens_per_s") or {}).items():
            if v and mine_pre.get(n):
                r[f"prefill_{n}"] = round(mine_pre[n] / v, 1)
        mine_dec = (o.get("decode") or {}).get("tokens_per_s")
        for k, v in ((p.get("decode") or {}).get("tokens_per_s") or {}).items():
            if v and mine_dec:
                r[f"decode_{k}"] = round(mine_dec / v, 1)
        tr, mine_tr = p.get("train") or {}, report.get("train")
        if isinstance(tr, dict) and tr.get("tokens_per_s") and isinstance(mine_tr, dict):
            r["train_tokens_per_s"] = round(mine_tr["tokens_per_s"] / tr["tokens_per_s"], 1)
            r["train_loss"] = {"ours_last": mine_tr.get("loss_last"), "peer_last": tr.get("loss_last")}
        out[name] = r
    return out


def _tokenizer_section(eng):
    """Encode MB/s on ~5 MB of Python stdlib source: ours in Pyodide (this Chromium) and in
    CPython, and the Rust `tokenizers` library in CPython for scale; GPT-NeoX-style file."""
    from tools import bench_tokenizer as bt
    import os
    with open(os.path.join(bt.FIXTURES, "neox.json"), encoding="utf-8") as f:
        tj = f.read()
    out = {"tokenizer": "tests/fixtures/tokenizers/neox.json",
           "pyodide_chromium": eng.run(bt.browser_code(tj)),
           "cpython": bt.run_cpython(tj)}
    try:
        out["tokenizers_library"] = bt.run_library(tj)
    except ImportError:
        out["tokenizers_library"] = "not installed (pip install tokenizers)"
    return out


def bench_config(c):
    """The model config a MODEL_CONFIGS entry (or a test's dict of the same keys) stands for."""
    from tools.init_weights import make_config
    return make_config(c.get("size", "nano"), family=c.get("family", "mamba1"),
                       pattern=c.get("pattern"), hidden_size=c["d_model"],
                       num_hidden_layers=c["n_layers"], vocab_size=c["vocab_size"],
                       **c.get("overrides", {}))


def _write_random_model(folder, c):
    """Reference-initialised random weights (what generate-bin writes), bf16 on disk."""
    from tools import convert_host
    from tools.init_weights import init_weights
    cfg = bench_config(c)
    convert_host.write_hf(folder, cfg, init_weights(cfg, 0), "BF16")


def _model_section(eng, args):
    out = {}
    for name in args.models.split(","):
        c = MODEL_CONFIGS[name]
        url = f"{eng.server.url}/weights/{name}/"
        r = eng.run(MODEL_SNIPPET, url=url, prompts=list(c["prompts"]),
                    decode=args.decode_tokens or c["decode"],
                    max_seconds=args.max_seconds, weights=_formats(args))
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


CEILINGS_SNIPPET = """
from py_engine.benchmarks import ceilings
result = await ceilings.run(device)
"""
# the read ceiling alone, measured again after the model section (ceilings.rejudge_ceiling)
READ_SNIPPET = """
from py_engine.benchmarks import ceilings
result = await ceilings.device_read_bandwidth(device)
"""


def _formats(args):
    from py_engine.ops.weight_format import format_named
    return [format_named(f) for f in args.weights.split(",") if f.strip()]


NATIVE_SECTIONS = ("foundation", "model", "train", "mamba3_scan",
                   "prefill_gemm", "prefill_ops")   # sections that measure the GPU engine
NATIVE_MODEL_SNIPPET = """
import time
from py_engine.benchmarks import model as mb
from py_engine.models.generate import Generator, SamplingConfig
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
result = await mb.run(device, prompts=args['prompts'], decode_tokens=args['decode'],
                      max_seconds=args['max_seconds'], folder=args['folder'],
                      weights_formats=args['weights'], read_gb_per_s=args.get('read_gb_per_s'))
t0 = time.perf_counter()   # a second load + first token, pipelines already built
model = await load_model_local(device, args['folder'])
gen = Generator(model, SamplingConfig(greedy=True), max_tokens=16)
await gen.prefill([1, 2, 3, 4])
result['model_load_and_first_token_s'] = time.perf_counter() - t0
gen.release()
model.release()
"""


def _run_native(args):
    """The same sections on the native backend: one device, one asyncio loop, local files."""
    import tempfile
    from pathlib import Path

    from tools.native_engine import NativeEngine
    variants = args.variants               # parsed (or refused) by run()
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": "native"}
    sections = args.only or [s for s in SECTIONS if s in NATIVE_SECTIONS and s not in ASKED_ONLY]
    with tempfile.TemporaryDirectory(prefix="mambaweb-bench-") as tmp, NativeEngine() as eng:
        report["adapter"] = eng.info["adapter"]
        report["engine_boot_ms"] = eng.info["boot_ms"]
        report["blocking_waits"] = eng.device.blocking_waits
        # the device's own ceilings first: every decode number is judged against them
        report["ceilings"] = eng.run(CEILINGS_SNIPPET)
        ceiling = report["ceilings"]["read"]["gb_per_s"]
        for name in sections:
            t0 = time.time()
            if name == "model":
                out = {}
                for m in args.models.split(","):
                    c = MODEL_CONFIGS[m]
                    folder = Path(tmp) / m
                    _write_random_model(folder, c)
                    kw = dict(folder=str(folder), prompts=list(c["prompts"]),
                              decode=args.decode_tokens or c["decode"],
                              max_seconds=args.max_seconds, weights=_formats(args),
                              read_gb_per_s=ceiling)
                    out[m] = eng.run(NATIVE_MODEL_SNIPPET, **kw)
                    for vname, env in variants:
                        with _environ(env):
                            out[m].setdefault("variants", {})[vname] = \
                                eng.run(NATIVE_MODEL_SNIPPET, **kw)
                report[name] = out
            elif name in NATIVE_SECTIONS:
                report[name] = eng.run(SECTIONS[name])
            else:
                report[name] = "browser-only section: run `mambaweb bench` without --native"
            report[name + "_wall_s"] = round(time.time() - t0, 2)
        if "model" in sections:   # the ceiling again: the decodes judged on the best of both
            rejudge_ceiling(report, eng.run(READ_SNIPPET))
    annotate_floor(report)       # each decode's GPU time against the device's floor
    print(json.dumps(report, indent=None if args.json else 2))
    return 0
