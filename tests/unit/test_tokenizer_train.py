"""Training: a byte-level BPE learned from text, saved as tokenizer.json, that the `tokenizers`
library loads and encodes exactly as we do."""
import os
import random
import sysconfig
import time

import pytest

from py_engine.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")


def texts(limit=300_000):
    root = sysconfig.get_paths()["stdlib"]
    out, total = [], 0
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                t = f.read()
            out.append(t)
            total += len(t)
            if total > limit:
                break
    rng = random.Random(0)
    words = ["naïve", "café", "Straße", "日本語", "中文", "😀", "👩\u200d💻", "it's", "WE'LL",
             "١٢٣", "12345", "<|endoftext|>", "\u3000", "e\u0301"]
    out += [" ".join(rng.choice(words) for _ in range(40)) for _ in range(200)]
    return out


TEXTS = texts()


@pytest.mark.parametrize("pre,norm", [("gpt2", None), ("qwen2", "NFC"), ("llama3", None)])
def test_trained_tokenizer_loads_in_library_and_encodes_identically(tmp_path, pre, norm):
    t0 = time.perf_counter()
    tok = Tokenizer.train(TEXTS, 2000, ["<|endoftext|>", "<|pad|>"], pre_tokenizer=pre,
                          normalizer=norm)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, "training 300 KB took %.1f s" % elapsed
    assert tok.vocab_size == 2000
    assert tok.token_to_id("<|endoftext|>") == 0
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    lib = tokenizers.Tokenizer.from_file(str(path))
    ours = Tokenizer.from_file(path)
    assert lib.get_vocab_size() == 2000
    whole = "".join(TEXTS)
    assert lib.encode(whole).ids == ours.encode(whole) == tok.encode(whole)
    samples = TEXTS[:3] + TEXTS[-50:] + ["", " ", "x<|endoftext|>y", "tokenizer's 2024 test"]
    for s in samples:
        ids = ours.encode(s)
        assert ids == lib.encode(s).ids
        assert ours.decode(ids) == lib.decode(ids)
    # it learned something: the corpus compresses well below one token per byte
    assert len(ours.encode(whole)) < 0.45 * len(whole.encode())


def test_training_is_deterministic():
    a = Tokenizer.train(TEXTS[:20], 800, ["<|endoftext|>"])
    b = Tokenizer.train(iter(TEXTS[:20]), 800, ["<|endoftext|>"])
    assert a.to_json() == b.to_json()


def test_special_tokens_are_not_learned_from():
    tok = Tokenizer.train(["<|endoftext|>" * 50 + " hello hello"] * 20, 300, ["<|endoftext|>"])
    assert tok.encode("<|endoftext|>") == [0]
    vocab = tok.get_vocab()
    assert not any("endoftext" in t for t in vocab if t != "<|endoftext|>")


def test_duplicate_merge_results_load_identically():
    """Corpora where one string arises from two different pairs ("ab c" and "a bc"): the
    merge list then has two pairs for one token, as the library's trainer writes too."""
    corpus = ["abc " * 5 + "xab " * 9 + "bcx " * 9 + "abc" * 3 + " ab bc ca cab bca"] * 10
    tok = Tokenizer.train(corpus, 256 + 40, min_frequency=1)
    lib = tokenizers.Tokenizer.from_str(tok.to_json())
    for s in corpus + ["abcabc", "cabcab", "bcabca ab bc abc", "aabbcc"]:
        assert tok.encode(s) == lib.encode(s).ids


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(["abc"], 100)
    with pytest.raises(ValueError, match="normalizer"):
        Tokenizer.train(["abc"], 300, normalizer="NFKC")
    with pytest.raises(ValueError, match="pre-tokenizer"):
        Tokenizer.train(["abc"], 300, pre_tokenizer="bert")
    with pytest.raises(TypeError):
        Tokenizer.train([b"abc"], 300)
