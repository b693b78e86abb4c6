"""Step 4: a trained folder (what `collect` brought back) -> models/default-new: the weights
(f32 when they fit MAX_WEIGHT_BYTES, else bf16 through our converter), config.json,
tokenizer.json, and a README stating data, split, tokenizer, shape, steps, hardware, the
commands, and the held-out loss / bits per byte from `mambaweb eval` next to the old default's
on the same held-out split.
"""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from tools.default_model.collect import META_FILE, MODEL_FILES

MAX_WEIGHT_BYTES = 25_000_000      # the repo's budget for models/default's weights
PROMPT = "def fibonacci(n):"
ROOT = Path(__file__).resolve().parents[2]


def read_trained(trained):
    """(config dict, train-state meta dict) of a folder `collect` wrote (or train-torch's OUT)."""
    trained = Path(trained)
    for name in MODEL_FILES:
        if not (trained / name).is_file():
            raise ValueError(f"--trained {trained}: no {name}; give the folder `collect` wrote "
                             "on the device (config.json, model.safetensors, tokenizer.json, "
                             f"{META_FILE})")
    conf = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    if (trained / META_FILE).is_file():
        meta = json.loads((trained / META_FILE).read_text(encoding="utf-8"))
    else:
        from tools.train_torch import checkpoint as ckpt
        meta = ckpt.read_meta(trained)   # ValueError: neither the json nor train-torch's state
    return conf, meta


def weight_dtype(n_params):
    """'f32' when the f32 weights fit the repo's budget, else 'bf16' (the engine loads both)."""
    return "f32" if 4 * n_params <= MAX_WEIGHT_BYTES else "bf16"


def write_weights(trained, out, conf):
    """Copy (f32) or convert (bf16) the weights into `out`; returns (dtype, params, bytes)."""
    from safetensors import safe_open
    src = Path(trained) / "model.safetensors"
    with safe_open(str(src), "np") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    dtype = weight_dtype(n_params)
    if dtype == "f32":
        shutil.copyfile(src, out / "model.safetensors")
        shutil.copyfile(Path(trained) / "config.json", out / "config.json")
    else:
        from safetensors.numpy import load_file
        from py_engine.models.config import MambaConfig
        from tools import convert_host
        cfg = MambaConfig.from_hf_dict(conf, str(Path(trained) / "config.json"))
        convert_host.write_hf(str(out), cfg, load_file(str(src)), "BF16")
    return dtype, n_params, (out / "model.safetensors").stat().st_size


def run_eval(model, corpus, seq_len=None):
    """`mambaweb eval --json` of `model` on `corpus` (a subprocess: it drives Chromium)."""
    cmd = [sys.executable, "-m", "tools.cli", "eval", "--model", str(model), "--corpus",
           str(corpus), "--json"] + (["--seq-len", str(seq_len)] if seq_len else [])
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise ValueError(f"`{' '.join(cmd[2:])}` failed ({res.returncode}): "
                         f"{res.stderr.strip().splitlines()[-1:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["command"] = "mambaweb " + " ".join(cmd[3:])
    return out


def greedy_sample(model_dir, prompt=PROMPT, new_tokens=48):
    """transformers' greedy continuation of `prompt` (what the README shows of the model)."""
    import tokenizers
    import torch
    import transformers
    transformers.utils.logging.set_verbosity_error()
    tok = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir))
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return tok.decode(out[0].tolist(), skip_special_tokens=True)


def train_command(meta, init_dir="INIT", data="build/default-model/corpus/train.txt",
                  out="OUT"):
    """The train-torch command line that reproduces `meta`'s run."""
    t = meta["train"]
    return (f"mambaweb train-torch --model {init_dir} --data {data} --out {out} "
            f"--steps {t['steps']} --batch {t['batch']} --seq-len {t['seq_len']} "
            f"--lr {t['lr']:g} --warmup {t['warmup']} --weight-decay {t['weight_decay']:g} "
            f"--grad-clip {t['grad_clip']:g} --grad-accum {t['accum']} --seed {t['seed']} "
            f"--dtype {meta.get('dtype', 'f32')}")


def finish(trained, out, corpus_dir, old_model=None, old_eval=None, hardware=None,
           skip_eval=False):
    """Write `out` (models/default-new); returns the facts the README states."""
    conf, meta = read_trained(trained)
    corpus_dir = Path(corpus_dir)
    manifest = json.loads((corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    heldout = corpus_dir / "heldout.txt"
    out = Path(out)
    if out.resolve() == (ROOT / "models" / "default").resolve():
        raise ValueError(f"--out {out} is the current default model: write models/default-new "
                         "and swap it in after reading its README")
    out.mkdir(parents=True, exist_ok=True)
    dtype, n_params, nbytes = write_weights(trained, out, conf)
    shutil.copyfile(Path(trained) / "tokenizer.json", out / "tokenizer.json")
    summary = Path(trained) / "device_summary.json"     # `train` writes it on the GPU machine
    device = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
    hardware = hardware or device.get("hardware")
    facts = {"conf": conf, "meta": meta, "manifest": manifest, "dtype": dtype,
             "params": n_params, "weight_bytes": nbytes, "hardware": hardware,
             "device": device}
    # both models scored with windows of the new model's training length (eval's default,
    # 1024, would ask a model trained on 512-token windows to run past what it saw)
    seq_len = int(meta["train"]["seq_len"])
    if not skip_eval:
        old_result = None
        if old_eval:                     # checked first: scoring the new model takes minutes
            old_result = json.loads(Path(old_eval).read_text(encoding="utf-8"))
            if old_result.get("seq_len") != seq_len:
                raise ValueError(f"--old-eval {old_eval} scored windows of "
                                 f"{old_result.get('seq_len')} tokens, the new model is "
                                 f"scored with {seq_len}: measure the old one with "
                                 f"--seq-len {seq_len} (or drop --old-eval)")
        facts["new_eval"] = run_eval(out, heldout, seq_len)
        facts["old_eval"] = old_result or (run_eval(old_model, heldout, seq_len)
                                           if old_model else None)
    facts["sample"] = greedy_sample(out)
    from tools.default_model.readme import render
    (out / "README.md").write_text(render(facts), encoding="utf-8")
    return facts
