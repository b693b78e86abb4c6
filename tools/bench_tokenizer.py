"""Tokenizer encode throughput: ~5 MB of Python standard library source, MB/s of UTF-8 input.

    python -m tools.bench_tokenizer                 # CPython, ours and `tokenizers` for scale
    python -m tools.bench_tokenizer --pyodide       # also Pyodide 3.14 under Node (V8, the
                                                    # same WebAssembly engine as Chromium)
    python -m tools.bench_tokenizer --json

`SECTION` is the measurement as a self-contained code string (stdlib + py_engine only) that
sets `result`: CPython runs it with exec(), Node-Pyodide runs it as is, and `mambaweb bench`
can run it inside the page's engine. It reads the running Python's own stdlib sources, so the
text differs a little between Python versions; the tokenizer is the committed GPT-NeoX-style
fixture when given (TOKENIZER_JSON), else one trained on the first 300 KB of that text.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
PYODIDE = os.path.join(ROOT, "node_modules", "pyodide")

SECTION = r'''
import os, sys, sysconfig, time, unicodedata
from py_engine.tokenizer import Tokenizer

def _sources():
    """(name, text) of the running Python's stdlib .py files, in a fixed order; Pyodide keeps
    them in /lib/python3XX.zip."""
    root = sysconfig.get_paths()["stdlib"]
    skip = ("site-packages", "test", "tests", "idlelib")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if name.endswith(".py"):
                try:
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        yield name, f.read()
                except (OSError, UnicodeDecodeError):
                    pass
    import zipfile
    for entry in sys.path:
        if entry.endswith(".zip") and os.path.isfile(entry):
            with zipfile.ZipFile(entry) as z:
                for name in sorted(z.namelist()):
                    if name.endswith(".py") and not any(p in skip for p in name.split("/")[:-1]):
                        try:
                            yield name, z.read(name).decode("utf-8")
                        except UnicodeDecodeError:
                            pass

def _corpus(limit):
    parts, total = [], 0
    for _, text in _sources():
        parts.append(text)
        total += len(text.encode("utf-8"))
        if total >= limit:
            break
    return "".join(parts)

_text = _corpus(CORPUS_BYTES)
_nbytes = len(_text.encode("utf-8"))
_t = time.perf_counter()
if TOKENIZER_JSON:
    _tok = Tokenizer.from_str(TOKENIZER_JSON)
else:
    _tok = Tokenizer.train([_text[:300000]], 4096, ["<|endoftext|>"], normalizer="NFC")
_load_s = time.perf_counter() - _t
_times = []
for _i in range(REPEATS):
    if _i == 0 or not WARM_CACHE:
        _tok._cache.clear()
    _t = time.perf_counter()
    _ids = _tok.encode(_text)
    _times.append(time.perf_counter() - _t)
_t = time.perf_counter()
_chunks = (_text[i:i + 65536] for i in range(0, len(_text), 65536))
_n_stream = sum(len(b) for b in _tok.encode_batches(_chunks))
_stream_s = time.perf_counter() - _t
assert _n_stream == len(_ids)
result = {
    "python": sys.version.split()[0], "platform": sys.platform,
    "unicode": unicodedata.unidata_version, "corpus_mb": round(_nbytes / 1e6, 3),
    "tokens": len(_ids), "load_or_train_s": round(_load_s, 3),
    "cold_mb_s": round(_nbytes / _times[0] / 1e6, 3),
    "best_mb_s": round(_nbytes / min(_times) / 1e6, 3),
    "stream_mb_s": round(_nbytes / _stream_s / 1e6, 3),
}
'''

_NODE_RUNNER = r"""
import { loadPyodide } from "%(mjs)s";
import fs from "fs";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const py = await loadPyodide({indexURL: "%(index)s"});
for (const [path, text] of Object.entries(job.files)) {
  const dir = path.split("/").slice(0, -1).join("/");
  py.FS.mkdirTree(dir);
  py.FS.writeFile(path, text);
}
py.runPython("import sys; sys.path.insert(0, '/work')");
const ns = py.toPy(job.globals);
await py.runPythonAsync(job.code, {globals: ns});
process.stdout.write(ns.get("result_json"));
"""


def pyodide_available():
    return bool(shutil.which("node")) and os.path.exists(os.path.join(PYODIDE, "pyodide.mjs"))


def run_pyodide(code, globals_=None, timeout=600):
    """Run `code` in Pyodide under Node with py_engine/tokenizer importable; `code` sets
    `result` (JSON-serializable), which is returned."""
    files = {"/work/py_engine/__init__.py": ""}
    pkg = os.path.join(ROOT, "py_engine", "tokenizer")
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), encoding="utf-8") as f:
                files["/work/py_engine/tokenizer/" + name] = f.read()
    job = {"files": files, "globals": dict(globals_ or {}),
           "code": code + "\nimport json as _json\nresult_json = _json.dumps(result)\n"}
    with tempfile.TemporaryDirectory() as tmp:
        runner = os.path.join(tmp, "run.mjs")
        with open(runner, "w") as f:
            f.write(_NODE_RUNNER % {"mjs": os.path.join(PYODIDE, "pyodide.mjs"),
                                    "index": PYODIDE + "/"})
        job_path = os.path.join(tmp, "job.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        proc = subprocess.run(["node", runner, job_path], capture_output=True, text=True,
                              timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError("Pyodide run failed:\n" + proc.stderr[-4000:])
    return json.loads(proc.stdout)


def section_globals(tokenizer_json=None, corpus_bytes=5_000_000, repeats=3, warm_cache=True):
    return {"TOKENIZER_JSON": tokenizer_json or "", "CORPUS_BYTES": corpus_bytes,
            "REPEATS": repeats, "WARM_CACHE": warm_cache}


def browser_code(tokenizer_json=None, **kw):
    """SECTION with its settings inlined: a snippet `mambaweb bench` can run in the page's
    engine (it sets `result`)."""
    head = "".join("%s = %r\n" % kv for kv in section_globals(tokenizer_json, **kw).items())
    return head + SECTION


def run_cpython(tokenizer_json=None, **kw):
    ns = section_globals(tokenizer_json, **kw)
    sys.path.insert(0, ROOT)
    exec(compile(SECTION, "<bench_tokenizer>", "exec"), ns)
    return ns["result"]


def run_library(tokenizer_json, corpus_bytes=5_000_000, repeats=3):
    """The `tokenizers` library on the same text and file, for scale: one call on the whole
    text, and the batch API on 64 KB pieces (its usual, multi-threaded use)."""
    import tokenizers
    ns = section_globals(tokenizer_json, corpus_bytes, 1)
    exec(compile(SECTION.split("_nbytes =")[0], "<corpus>", "exec"), ns)
    text = ns["_text"]
    nbytes = len(text.encode("utf-8"))
    tok = tokenizers.Tokenizer.from_str(tokenizer_json)
    whole = []
    for _ in range(repeats):
        t = time.perf_counter()
        tok.encode(text)
        whole.append(time.perf_counter() - t)
    pieces = [text[i:i + 65536] for i in range(0, len(text), 65536)]
    t = time.perf_counter()
    tok.encode_batch(pieces)
    batch = time.perf_counter() - t
    return {"tokenizers": tokenizers.__version__, "corpus_mb": round(nbytes / 1e6, 3),
            "whole_text_mb_s": round(nbytes / min(whole) / 1e6, 3),
            "batch_64k_mb_s": round(nbytes / batch / 1e6, 3), "threads": os.cpu_count()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(FIXTURES, "neox.json"),
                    help="tokenizer.json to measure ('' = train one on the corpus)")
    ap.add_argument("--mb", type=float, default=5.0, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pyodide", action="store_true", help="also run in Pyodide under Node")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tj = None
    if args.tokenizer:
        with open(args.tokenizer, encoding="utf-8") as f:
            tj = f.read()
    kw = dict(corpus_bytes=int(args.mb * 1e6), repeats=args.repeats)
    report = {"tokenizer": os.path.basename(args.tokenizer) if tj else "trained",
              "cpython": run_cpython(tj, **kw)}
    if tj is not None:
        try:
            report["library"] = run_library(tj, kw["corpus_bytes"], args.repeats)
        except ImportError:
            report["library"] = None
    if args.pyodide:
        report["pyodide_node"] = (run_pyodide(SECTION, section_globals(tj, **kw))
                                  if pyodide_available() else None)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
