"""Streaming encode: chunks cut anywhere give exactly encode(whole text), in bounded memory."""
import json
import os
import random
import sysconfig

import pytest

from py_engine.tokenizer import Tokenizer

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizers")
NAMES = ["gpt2", "neox", "qwen2", "llama3"]


def corpus():
    root = os.path.join(sysconfig.get_paths()["stdlib"], "json")
    parts = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                parts.append(f.read())
    parts += ["<|endoftext|>", "naïve cafe\u0301 ", "x<|im_start|>user\n中文 😀👩\u200d💻\n",
              "  \n\n\t\t  it's 12345678 'S\u3000\u2028\r\n", "e\u0301\u0301!", "<|endoftext",
              "|>", "  " * 40 + "x", "a.b,c;d(e)f[g]h{i}j-k+l\n" * 30, "\n" + "ab" * 3000]
    return "".join(parts) * 2


def chunkings(text, rng):
    yield [text]
    yield list(text[:2000])  # one character at a time
    for _ in range(6):
        chunks, pos = [], 0
        while pos < len(text):
            n = rng.choice([1, 2, 3, 7, 50, 300, 4000])
            chunks.append(text[pos:pos + n])
            pos += n
        yield chunks


def load(name, **edit):
    with open(os.path.join(FIX, name + ".json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if edit.get("prefix"):
        pre = cfg["pre_tokenizer"]
        (pre["pretokenizers"][-1] if pre["type"] == "Sequence" else pre)["add_prefix_space"] = True
    return Tokenizer.from_config(cfg)


@pytest.mark.parametrize("name,prefix", [(n, False) for n in NAMES] + [("gpt2", True),
                                                                         ("qwen2", True)])
def test_stream_equals_encode(name, prefix):
    tok = load(name, prefix=prefix)
    text = corpus()
    rng = random.Random(name)
    for chunks in chunkings(text, rng):
        whole = "".join(chunks)
        expected = tok.encode(whole)
        for block in (1000, 64):
            batches = list(tok.encode_batches(chunks, block_chars=block))
            got = [i for b in batches for i in b]
            assert got == expected
        if len(chunks) > 100:
            assert len(batches) > 10  # it really cut
        assert list(tok.encode_stream(chunks, add_special_tokens=False)) == tok.encode(
            whole, add_special_tokens=False)


def test_stream_is_memory_bounded():
    """A generator of 20 MB of text: each batch is emitted long before the end and the
    buffered tail stays small."""
    tok = load("gpt2")
    line = "for i in range(10):\n    total += values[i] * 2  # accumulate\n"
    n_chunks = 20_000_000 // (len(line) * 100)
    produced = [0]

    def chunks():
        for _ in range(n_chunks):
            produced[0] += 1
            yield line * 100

    chunk_len = len(line) * 100
    per_batch = (1 << 16) // chunk_len + 2
    seen = 0
    for batch in tok.encode_batches(chunks(), block_chars=1 << 16):
        seen += 1
        # a batch comes out as soon as a block's worth of text is buffered
        assert produced[0] <= per_batch * seen
        if seen > 50:
            break
    assert seen > 50


def test_text_without_cut_points_is_still_exact():
    tok = load("qwen2")
    text = "日本語のテキスト" * 5000 + " end"
    chunks = [text[i:i + 100] for i in range(0, len(text), 100)]
    assert [i for b in tok.encode_batches(chunks, block_chars=256) for i in b] == tok.encode(text)


def test_stream_rejects_bytes():
    tok = load("gpt2")
    with pytest.raises(TypeError):
        list(tok.encode_stream([b"abc"]))


ATOMS = ["a", "Z", "q1", "7", "42", ".", ",", "(", ")", "'", "'s", "'LL", "\n", "\n\n", "\r\n",
         " ", "  ", "    ", "\t", "\u3000", "\xa0", "é", "e\u0301", "\u0301", "中", "😀",
         "\u200d", "<|endoftext|>", "<|im_start|>", "<|", "|>", "x.y", "f(x)\n", "\n  \n"]


@pytest.mark.parametrize("name", NAMES)
def test_stream_fuzz(name):
    tok = load(name)
    rng = random.Random(7)
    for _ in range(40):
        text = "".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 600)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 40))))
        chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        got = [i for b in tok.encode_batches(chunks, block_chars=rng.choice([1, 8, 40]))
               for i in b]
        assert got == tok.encode(text), repr(text)
