"""The GPU table rows of `mambaweb bench` reports, as the README writes them.

    python -m tools.bench_summary REPORT.json [RUN.err ...]

A report (the bench's JSON on stdout) gives its read ceiling and one row per model and format.
A bench's stderr (`bench --dawn` writes each part there as it ends, `bench --dawn: WHAT {json}`)
gives the rows of a run that a timeout stopped before its report: the ceiling it measured first
and every format that finished. Rows: prefill 64 / 256 / 1,024 tok/s, decode tok/s, GPU ms a
token, % of the read ceiling at GPU time (streamed), dispatches a token, what paced the stream
(the report's `bound_by`; a stopped run's rows lack it and the % at GPU time, which the report
adds at the end, and their streamed % is judged on the first ceiling only, where the report's is
on the best of that and a second measured after the models)."""
import argparse
import json
import sys

from tools.bench_dawn import PROGRESS


def parts_of_stderr(text):
    """{what: result} of a bench's stderr lines `bench --dawn: WHAT {json}`, in order."""
    said = {}
    for line in text.splitlines():
        if line.startswith(PROGRESS) and " {" in line:
            what, _, body = line[len(PROGRESS):].partition(" {")
            try:
                said[what] = json.loads("{" + body)
            except ValueError:
                continue                    # a line cut off by the kill: nothing to show
    return said


def runs_of(path):
    """(ceiling GB/s or None, [(model, format, result)]) of a report or a bench's stderr."""
    with open(path) as f:
        text = f.read()
    try:
        report = json.loads(text)
    except ValueError:
        report = None
    if isinstance(report, dict) and "model" in report:
        ceiling = report.get("ceilings", {}).get("read", {}).get("gb_per_s")
        rows = [(m, fmt, r) for m, mv in report["model"].items()
                for fmt, r in mv.get("formats", {}).items()]
        return ceiling, rows
    said = parts_of_stderr(text)
    ceiling = said.get("ceilings", {}).get("read", {}).get("gb_per_s")
    rows = []
    for what, r in said.items():
        words = what.split()
        if len(words) == 3 and words[0] == "model":     # not "model M variant V F"
            rows.append((words[1], words[2], r))
    return ceiling, rows


def _num(v, digits=0):
    if v is None:
        return "--"
    return f"{v:,.{digits}f}"


def row(model, fmt, r):
    """One markdown table row of a model's format."""
    prefill = {p["prompt"]: p.get("tokens_per_s") for p in r.get("prefill", [])}
    d = r.get("decode") or {}
    pct = d.get("pct_of_read_ceiling_at_gpu_time")
    streamed = d.get("pct_of_read_ceiling")
    cells = [f"{model} {fmt}",
             " / ".join(_num(prefill.get(t)) for t in (64, 256, 1024)),
             _num(d.get("tokens_per_s")), _num(d.get("gpu_ms_per_token"), 3),
             f"{_num(pct, 1)} ({_num(streamed, 1)})", _num(d.get("dispatches_per_token")),
             d.get("bound_by") or "--"]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| shape, weights | prefill 64 / 256 / 1,024 tok/s | decode tok/s | GPU ms a token | "
          "% of read at GPU time (streamed) | dispatches a token | paced by |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


def summary(paths):
    lines, rows = [], []
    for path in paths:                  # each file read once: its ceiling line, then its rows
        ceiling, runs = runs_of(path)
        digits = 0 if ceiling is None or ceiling >= 100 else 2     # SwiftShader's is under 1
        lines.append(f"{path}: read ceiling {_num(ceiling, digits)} GB/s, {len(runs)} row(s)")
        rows.extend(row(*r) for r in runs)
    return "\n".join(lines + [HEADER] + rows)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench_summary", description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="bench reports (JSON) or a bench's stderr")
    args = ap.parse_args(argv)
    try:
        print(summary(args.paths))
    except OSError as e:
        print(f"bench_summary: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
