"""The GPU-machine step in one command: init -> a short probe of train-torch's speed -> the
real train-torch run sized to a time budget -> collect.

Why a probe: the step count sets the learning-rate schedule (warmup, cosine to the end), so
it must be known before the run starts; a run cut by a timeout would end at a high learning
rate. The probe runs PROBE_STEPS steps of the same shape (same model, batch, seq_len, dtype)
into a scratch folder and takes the median tokens/s of its steps after PROBE_WARM (CUDA and
allocator warm-up). Then
    steps = min(budget_s * tokens_per_s, max_epochs * corpus tokens) / tokens per step
and the run saves a checkpoint every ~steps/SAVES steps, so a kill at --deadline-s still
leaves a model for `collect` (its newest checkpoint; the README then says the run stopped
early).

Everything train-torch prints is kept: OUT/probe.log and OUT/train.log (its JSON step lines
and messages).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBE_STEPS = 12
PROBE_WARM = 4
SAVES = 8
MIN_STEPS = 50


def _train_torch(args, log, timeout=None):
    """Run `mambaweb train-torch ARGS` (this Python), its output teed into `log`; returns
    (exit code, the JSON step records)."""
    import threading
    cmd = [sys.executable, "-m", "tools.cli", "train-torch", *map(str, args)]
    recs = []
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd[2:]) + "\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=Path(__file__).resolve().parents[2])
        # past the deadline the run is stopped; its newest checkpoint is what `collect` takes
        timer = threading.Timer(timeout, p.terminate) if timeout else None
        if timer:
            timer.start()
        try:
            for line in p.stdout:
                f.write(line)
                f.flush()
                sys.stderr.write(line)
                if line.startswith("{"):
                    recs.append(json.loads(line))
        finally:
            if timer:
                timer.cancel()
            rc = p.wait()
    return rc, recs


def corpus_tokens(model_dir, data):
    """Tokens of the corpus under the model's tokenizer (train-torch's own encoding)."""
    from tools.cmd_pretrain import read_corpus
    from tools.train_torch.data import encode
    text = (Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8")
    texts, _ = read_corpus(data)
    return len(encode(texts, text, 1 << 30, "tokenizer.json")[1])


def plan_steps(tokens_per_s, budget_s, max_epochs, n_tokens, per_step):
    """The run's step count (the module docstring's rule), at least MIN_STEPS."""
    by_time = budget_s * tokens_per_s / per_step
    by_epochs = max_epochs * n_tokens / per_step
    return max(MIN_STEPS, int(min(by_time, by_epochs)))


def run(a):
    """The `train` sub-command: returns the summary printed as JSON."""
    from tools.default_model import init as init_mod
    from tools.default_model.collect import collect
    t_start = time.monotonic()
    for f in (a.tokenizer, a.data):
        if not Path(f).is_file():
            raise ValueError(f"{f}: no such file; carry build/default-model/ from the machine "
                             "that ran the corpus and tokenizer steps")
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    init_dir = work / "init"
    r = init_mod.make(init_dir, a.tokenizer)
    n_tokens = corpus_tokens(init_dir, a.data)
    per_step = a.batch * a.seq_len
    common = ["--model", init_dir, "--data", a.data, "--batch", a.batch, "--seq-len",
              a.seq_len, "--dtype", a.dtype]
    tps = None
    if not a.steps:                      # --steps given: no probe needed
        rc, recs = _train_torch(common + ["--out", work / "probe", "--steps", PROBE_STEPS],
                                out / "probe.log")
        if rc != 0 or len(recs) < PROBE_STEPS:
            raise ValueError(f"the probe run failed (exit {rc}); see {out / 'probe.log'}")
        tps = statistics.median(r_["tokens_per_s"] for r_ in recs[PROBE_WARM:])
    steps = a.steps or plan_steps(tps, a.budget_s, a.max_epochs, n_tokens, per_step)
    save_every = max(1, steps // SAVES)
    left = max(30.0, a.deadline_s - (time.monotonic() - t_start) - 30)  # 30 s: final save
    rc, recs = _train_torch(common + ["--out", work / "run", "--steps", steps, "--lr", a.lr,
                                      "--warmup", a.warmup, "--save-every", save_every,
                                      "--keep", 1, "--seed", 0],
                            out / "train.log", timeout=left)
    meta = collect(work / "run", out)
    summary = {"init_params": r["params"], "corpus_tokens": n_tokens,
               "probe_tokens_per_s": tps, "steps_planned": steps, "save_every": save_every,
               "train_exit": rc, "steps_done": meta["step"], "finished": meta["finished"],
               "last_logged_loss": recs[-1]["loss"] if recs else None,
               "epochs": round(meta["step"] * per_step / n_tokens, 2),
               "wall_s": round(time.monotonic() - t_start, 1),
               "init_sha256": _sha256(init_dir / "model.safetensors"),
               "hardware": _hardware()}
    (out / "device_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _sha256(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hardware():
    """'1 x NVIDIA H200, PyTorch 2.11.0, transformers 5.17.0' (what the README states)."""
    import torch
    import transformers
    where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
             if torch.cuda.is_available() else f"{os.uname().machine} CPU")
    return f"{where}, PyTorch {torch.__version__}, transformers {transformers.__version__}"
