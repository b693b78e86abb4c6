"""Shared by tests/unit/test_train_torch.py and tests/browser/test_train_torch_roundtrip.py:
tiny tab-style checkpoints (the tab's initialiser and exporter, byte-level tokenizer.json) and
running `mambaweb train-torch` in one process or under torchrun."""
import json
import os
import random
import subprocess
import sys

from py_engine.train.data import byte_level_tokenizer_config
from tests.conftest import REPO

WORDS = ("the cat sat on a mat and def return import class self for while if else "
         "print range len").split()


def make_model(folder, family="mamba1", pattern=None, seed=0):
    """An HF folder as `mambaweb generate-bin` / the tab export it, plus tokenizer.json:
    d_model 16, 2 layers (or `pattern`'s), state 8, head_dim 8, vocab 256 (bytes)."""
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    cfg = make_config("tiny", family=family, pattern=pattern, hidden_size=16,
                      num_hidden_layers=2, state_size=8, head_dim=8)
    weights = init_weights(cfg, seed)
    cfg.rescale_prenorm_residual = False
    convert_host.write_hf(str(folder), cfg, weights, convert_host.ST_DTYPE["f32"])
    (folder / "tokenizer.json").write_text(json.dumps(byte_level_tokenizer_config()))
    return folder


def make_corpus(path, words=3000, seed=0):
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)))
    return path


def train_torch(*args, nproc=1, timeout=240):
    """Run the command (torchrun --standalone for nproc > 1); CompletedProcess with text."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    cmd = launch + ["-m", "tools.cli", "train-torch", *map(str, args), "--device", "cpu"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def steps_of(proc):
    """The JSON progress lines of a run (asserting it succeeded)."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
