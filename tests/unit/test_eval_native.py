"""`mambaweb eval --native` (wgpu-py) against transformers on fixture models: the mean loss over
the same windows (py_engine/train/evaluate.windows) equals transformers' `labels=` loss within
1e-4 relative, perplexity and bits per byte follow from it; q4 weights give a finite loss that
differs from f32's. tests/browser/test_eval_cli.py runs the same check in headless Chromium.

The fixtures (vocab 101 and 96) have no tokenizer.json, so the corpus is byte-level text whose
bytes are all below 96 (upper case, digits, punctuation)."""
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tools.native_engine import wgpu_adapter_problem

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FIX = REPO / "tests" / "fixtures" / "models"
MAMBAWEB = [sys.executable, "-m", "tools.cli", "eval"]
_problem = wgpu_adapter_problem()
native = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


def upper_case_corpus(path, n_words=260, seed=1):
    """Byte-level text with every byte in [10, 95]: valid ids for the fixtures' vocabularies."""
    rng = random.Random(seed)
    words = ["THE", "QUICK", "BROWN", "FOX", "JUMPS", "OVER", "A", "LAZY", "DOG", "1234",
             "(X+Y)*2", "[A]", "^_^", "DEF", "RETURN", "=", ":"]
    text = "".join(rng.choice(words) + (" " if rng.random() < 0.8 else "\n")
                   for _ in range(n_words))
    path.write_text(text)
    assert max(text.encode()) < 96
    return list(text.encode())


def transformers_loss(folder, ids, seq_len):
    """(mean loss, scored tokens) of transformers' model over evaluate.windows(len(ids), T),
    each window scored with labels=input_ids (the causal shift), in float64 sums."""
    from py_engine.train.evaluate import windows
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    nats, n = 0.0, 0
    with torch.no_grad():
        for start, length in windows(len(ids), seq_len):
            x = torch.tensor([ids[start:start + length]])
            nats += model(x, labels=x).loss.double().item() * (length - 1)
            n += length - 1
    return nats / n, n


def run_eval(*args, timeout=300):
    p = subprocess.run(MAMBAWEB + list(args) + ["--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    assert "eval: " in p.stderr and "100%" in p.stderr          # progress went to stderr
    return json.loads(p.stdout)


def check_against_transformers(out, folder, ids, seq_len):
    want, n = transformers_loss(folder, ids, seq_len)
    assert out["tokens"] == n == len(ids) - 1 and out["bytes"] == len(ids) - 1
    assert abs(out["loss"] - want) <= 1e-4 * want, (out["loss"], want)
    assert math.isclose(out["perplexity"], math.exp(out["loss"]), rel_tol=1e-12)
    assert math.isclose(out["bits_per_byte"], out["loss"] * n / math.log(2) / out["bytes"],
                        rel_tol=1e-12)


@native
@pytest.mark.slow
@pytest.mark.parametrize("name,seq_len,narrow", [("mamba-d40-tied", 64, "q8"),
                                                 ("nemotronh-mamf-tied", 100, "q4")])
def test_native_eval_equals_transformers_and_narrow_differs(tmp_path, name, seq_len, narrow):
    """(mamba-d40's K of 40 and 80 suit no q4 block of 32: q8 is its narrow format here.)"""
    ids = upper_case_corpus(tmp_path / "c.txt")
    # batch 3: batches of several windows and, with the short last window, of one
    common = ["--model", str(FIX / name), "--corpus", str(tmp_path / "c.txt"), "--tokenizer",
              "byte", "--seq-len", str(seq_len), "--batch", "3", "--native"]
    out = run_eval(*common)
    assert (len(ids) - 1) % (seq_len - 1) != 0            # a short last window is scored too
    assert out["weights"] == "f32" and out["backend"] == "native"
    assert set(out["gpu_weights"]["dtypes"]) == {"f32"}
    check_against_transformers(out, FIX / name, ids, seq_len)
    q = run_eval(*common, "--weights", narrow)
    assert q["weights"] == narrow and q["gpu_weights"]["dtypes"][narrow] >= 3
    assert q["tokens"] == out["tokens"] and q["bytes"] == out["bytes"]
    assert np.isfinite(q["loss"]) and q["loss"] != out["loss"]
    print(f"{name}: f32 loss {out['loss']:.6f}, {narrow} loss {q['loss']:.6f}")


@native
def test_native_eval_with_a_peft_adapter_equals_peft(tmp_path):
    """--adapter scores with the LoRA folder applied: the mean loss equals PEFT's model (the
    transformers base + PeftModel.from_pretrained) over the same windows; without it, the base's."""
    peft = pytest.importorskip("peft")
    base = REPO / "tests" / "fixtures" / "train" / "mamba2-g2-untied"     # vocab 77
    adapter = REPO / "tests" / "fixtures" / "lora" / "mamba2-g2-untied" / "adapter"
    rng = random.Random(5)
    text = "".join(rng.choice(["ABC", "DEF", "GHIJ", "KL", "0123", "456789", "(A+B)*C",
                               "=", ":", "-/"]) + rng.choice([" ", " ", "\n"]) for _ in range(120))
    assert max(text.encode()) < 77
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    ids, seq_len = list(text.encode()), 64
    common = ["--model", str(base), "--corpus", str(corpus), "--native", "--seq-len",
              str(seq_len), "--tokenizer", "byte"]
    got = run_eval(*common, "--adapter", str(adapter))
    plain = run_eval(*common)
    from py_engine.train.evaluate import windows
    from tools.make_lora_fixtures import allow_out_proj   # the fixture adapts out_proj too
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with allow_out_proj():
        model = peft.PeftModel.from_pretrained(model, adapter).eval()
    nats, n = 0.0, 0
    with torch.no_grad():
        for start, length in windows(len(ids), seq_len):
            x = torch.tensor([ids[start:start + length]])
            nats += model(input_ids=x, labels=x).loss.double().item() * (length - 1)
            n += length - 1
    want = nats / n
    assert got["tokens"] == n and got["adapter"] == str(adapter)
    assert abs(got["loss"] - want) <= 1e-4 * want, (got["loss"], want)
    assert abs(plain["loss"] - got["loss"]) > 1e-3          # the adapter changed the scores
    p = subprocess.run(MAMBAWEB + common + ["--adapter", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "adapter_config.json is missing" in p.stderr
    assert "Traceback" not in p.stderr
