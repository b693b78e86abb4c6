"""Device-side step: the train-torch output folder -> a small folder worth carrying back.

train-torch leaves OUT/ (the final model + torch_train_state.safetensors, 3x the weights:
AdamW's two moments) and OUT/checkpoint-<step>/ folders. Only the model and the run's
record are needed here: `collect` copies config.json, model.safetensors and tokenizer.json of
the newest state (the final OUT when the run finished, else its newest checkpoint: a run cut
short by a timeout still yields a model) and writes train_state.json, the state's metadata
(step, settings, tokens, elapsed seconds, world size, dtype, loss history) that `finish`
states in the README.
"""
import json
import shutil
from pathlib import Path

from tools.train_torch import checkpoint as ckpt

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
META_FILE = "train_state.json"


def collect(trained, out):
    """Copy the newest model of train-torch's OUT `trained` into `out`; returns its meta."""
    src = ckpt.latest(trained)              # ValueError naming the folder when there is none
    meta = ckpt.read_meta(src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if not (src / name).is_file():
            raise ValueError(f"{src} has no {name}: not a complete train-torch checkpoint")
        shutil.copyfile(src / name, out / name)
    meta = dict(meta, source=str(src), finished=int(meta["step"]) >= int(meta["train"]["steps"]))
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta
