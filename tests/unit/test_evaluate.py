"""py_engine/train/evaluate.py's rules on the host (no GPU): which tokens the windows score,
how batches group them, which bytes bits-per-byte divides by; and `mambaweb eval`'s one-line
refusals of a missing / empty / binary corpus or an unusable tokenizer, before any engine starts."""
import math
import subprocess
import sys

import pytest

from py_engine.train import evaluate as E
from py_engine.train.data import ByteTokenizer, tokenizer_from_json
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures"
MAMBAWEB = [sys.executable, "-m", "tools.cli", "eval"]


@pytest.mark.parametrize("n,T", [(2, 1024), (5, 5), (10, 4), (11, 4), (1000, 64), (64, 64),
                                 (65, 64), (66, 64)])
def test_windows_score_every_token_but_the_first_once(n, T):
    wins = E.windows(n, T)
    scored = []
    for start, length in wins:
        assert 2 <= length <= T and start + length <= n
        scored += range(start + 1, start + length)      # position t predicts token t+1
    assert scored == list(range(1, n))                   # each exactly once, in order
    assert [s for s, _ in wins] == list(range(0, (T - 1) * len(wins), T - 1))
    assert all(length == T for _, length in wins[:-1])


def test_batches_group_full_windows_and_keep_the_short_tail_alone():
    # 1 + 10 * 9 + 4 tokens: ten full windows of 10, a tail of 5 tokens
    plan = E.batches(1 + 10 * 9 + 4, 10, 4)
    assert plan == [(0, 4, 10), (36, 4, 10), (72, 2, 10), (90, 1, 5)]
    assert sum(b * (t - 1) for _, b, t in plan) == 10 * 9 + 4
    with pytest.raises(ValueError, match="at least 2 tokens"):
        E.windows(100, 1)


def test_default_batch_size_and_refusal_with_numbers():
    assert E.default_batch_size(1024, 256, 2**30) == 4            # rows <= 4096
    assert E.default_batch_size(1024, 50_000, 2**30) == 1         # logits <= 256 MiB
    assert E.default_batch_size(128, 4096, 2**30) == 32
    with pytest.raises(ValueError) as e:
        E.default_batch_size(1024, 200_000, 128 * 2**20)
    msg = str(e.value)
    assert "781 MiB" in msg and "128 MiB" in msg and "at most 167 tokens" in msg


def test_bytes_are_those_the_scored_tokens_decode_to():
    from tokenizers import Tokenizer as HFTokenizer
    text = (FIX / "tokenizers" / "gpt2.json").read_text(encoding="utf-8")
    tok = tokenizer_from_json(text)
    hf = HFTokenizer.from_str(text)
    docs = ["def f(x):\n    return x * 2  # ünïcödé, 中文, 🙂\n", "second document\n\tok"]
    ids, nbytes = E.prepare(docs, tok)
    assert tok.eos_id is not None and tok.eos_id in ids       # the separator: 0 bytes
    want = len(hf.decode(list(ids[1:]), skip_special_tokens=True).encode("utf-8"))
    first = len(hf.decode(list(ids[:1])).encode("utf-8"))
    assert nbytes == want == sum(len(d.encode("utf-8")) for d in docs) - first
    # byte-level: one byte per scored token; --max-tokens cuts the stream first
    ids, nbytes = E.prepare(["héllo wörld"], ByteTokenizer(), max_tokens=6)
    assert list(ids) == list("héllo wörld".encode("utf-8"))[:6] and nbytes == 5
    with pytest.raises(ValueError, match="at least 2 tokens"):
        E.prepare(["x"], ByteTokenizer())


def test_summary():
    s = E.summary(nats=300.0, tokens=100, nbytes=150)
    assert s["loss"] == 3.0 and math.isclose(s["perplexity"], math.exp(3.0))
    assert math.isclose(s["bits_per_byte"], 300.0 / math.log(2) / 150)
    assert (s["tokens"], s["bytes"]) == (100, 150)


def test_default_seq_len_rule():
    from tools.cmd_eval import default_seq_len
    assert default_seq_len({"model_type": "mamba"}) == 1024
    assert default_seq_len({"max_position_embeddings": 4096}) == 1024
    assert default_seq_len({"n_positions": 256}) == 256


def _eval(*args):
    return subprocess.run(MAMBAWEB + list(args), cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_bad_corpus_is_one_line_and_nonzero(tmp_path):
    model = str(FIX / "models" / "mamba-d40-tied")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    cases = {str(tmp_path / "missing.txt"): "does not exist",
             str(tmp_path / "empty.txt"): "empty",
             str(tmp_path / "bin.dat"): "binary (a NUL byte at offset 7)"}
    for corpus, why in cases.items():
        p = _eval("--model", model, "--corpus", corpus, "--tokenizer", "byte", "--native")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert lines[0].startswith("mambaweb eval: ") and why in lines[0] and corpus in lines[0]
        assert p.stdout == ""


def test_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    model = str(FIX / "models" / "mamba-d40-tied")      # 101 ids, no tokenizer.json
    text = "lower case bytes are above 100\n"
    (tmp_path / "c.txt").write_text(text)
    p = _eval("--model", model, "--corpus", str(tmp_path / "c.txt"), "--native")
    assert p.returncode == 2 and "no tokenizer.json" in p.stderr and "--tokenizer" in p.stderr
    p = _eval("--model", model, "--corpus", str(tmp_path / "c.txt"), "--tokenizer", "byte")
    assert p.returncode == 2 and f"token id {max(text.encode())}" in p.stderr and "101 ids" in p.stderr
