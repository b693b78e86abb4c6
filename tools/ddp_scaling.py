"""Measure `mambaweb train-torch` on 1 and K GPUs: tokens/s per GPU and the scaling, one table.

  python -m tools.ddp_scaling --gpus 2 --steps 30 --out /tmp/scaling [--models default,mamba2-small]

For each model: a 1-process run (global batch B) and a K-process DDP run under torchrun (global
batch K*B: the same rows per GPU, i.e. weak scaling), optionally a K-process FSDP run; each run
trains `--steps` optimizer steps from the same checkpoint on the same corpus. Tokens/s is the
median of the per-step figures after `--skip` warm-up steps (train-torch prints one JSON line per
step). Prints one JSON object per run and a Markdown table (README "Out to PyTorch").

Models: `default` (models/default), or `<family>-<preset>` made here by `generate-bin`
(byte-level tokenizer) — e.g. mamba2-small, mamba-small.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_model(name, work):
    """-> folder of an HF checkpoint with tokenizer.json for `name`."""
    if name == "default":
        return str(ROOT / "models" / "default")
    family, size = name.rsplit("-", 1)
    out = Path(work) / f"init-{name}"
    if not (out / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "tools.cli", "generate-bin", "--family", family,
                        "--size", size, "--vocab-size", "256", "--out", str(out)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        from py_engine.train.data import byte_level_tokenizer_config
        (out / "tokenizer.json").write_text(json.dumps(byte_level_tokenizer_config()))
    return str(out)


def params_of(folder):
    from safetensors import safe_open
    with safe_open(str(Path(folder) / "model.safetensors"), "np") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def train(model, data, out, nproc, batch, args, fsdp=False):
    cmd = ["-m", "tools.cli", "train-torch", "--model", model, "--data", data, "--out", out,
           "--steps", str(args.steps), "--batch", str(batch), "--seq-len", str(args.seq_len),
           "--dtype", args.dtype]
    if fsdp:
        cmd.append("--fsdp")
    if nproc > 1:
        cmd = ["torchrun", "--standalone", "--nproc_per_node", str(nproc)] + cmd
    else:
        cmd = [sys.executable] + cmd
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"train-torch failed ({p.returncode}): {' '.join(cmd)}\n"
                         f"{p.stderr[-3000:]}")
    steady = [x["tokens_per_s"] for x in lines[args.skip:]] or [lines[-1]["tokens_per_s"]]
    tps = statistics.median(steady)
    return {"processes": nproc, "fsdp": fsdp, "global_batch": batch, "seq_len": args.seq_len,
            "dtype": args.dtype, "steps": len(lines), "tokens_per_s": round(tps),
            "tokens_per_s_per_gpu": round(tps / nproc), "first_loss": lines[0]["loss"],
            "last_loss": lines[-1]["loss"], "command": " ".join(cmd[1 if nproc == 1 else 0:])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="default,mamba2-small")
    ap.add_argument("--data", default=str(ROOT / "py_engine"))
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="sequences per GPU")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median")
    ap.add_argument("--dtype", default="bf16", choices=("f32", "bf16"))
    ap.add_argument("--fsdp", action="store_true", help="also a K-process FSDP run")
    ap.add_argument("--out", default="/tmp/ddp-scaling")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        model = make_model(name, args.out)
        runs = [(1, args.batch, False), (args.gpus, args.gpus * args.batch, False)]
        if args.fsdp:
            runs.append((args.gpus, args.gpus * args.batch, True))
        base = None
        for nproc, batch, fsdp in runs:
            r = train(model, args.data, f"{args.out}/{name}-{nproc}{'-fsdp' if fsdp else ''}",
                      nproc, batch, args, fsdp)
            r["model"] = name
            r["params"] = params_of(model)
            base = base or r["tokens_per_s"]
            r["scaling"] = round(r["tokens_per_s"] / base, 2)
            print(json.dumps(r), flush=True)
            rows.append(r)
    print("\n| model | params | GPUs | mode | global batch × seq | tokens/s | per GPU | vs 1 GPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mode = "FSDP" if r["fsdp"] else ("DDP" if r["processes"] > 1 else "single")
        print(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['processes']} | {mode} | "
              f"{r['global_batch']} × {r['seq_len']} | {r['tokens_per_s']:,} | "
              f"{r['tokens_per_s_per_gpu']:,} | {r['scaling']}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
