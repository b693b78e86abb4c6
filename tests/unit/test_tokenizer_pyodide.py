"""The tokenizer inside Pyodide (CPython 3.14, Unicode 16, WebAssembly) under Node: same ids
as the `tokenizers` library on the host, same splits of every code point, same NFC.

This is the engine's runtime (Chromium runs the same Pyodide build on the same V8/wasm
engine); it catches Python-3.14-only breakage and any dependence on `unicodedata`'s version,
which is 16.0 there and 14.0 on the host.
"""
import json
import os
import random
import unicodedata

import pytest

from tools.bench_tokenizer import pyodide_available, run_pyodide

tokenizers = pytest.importorskip("tokenizers")
pytestmark = pytest.mark.skipif(not pyodide_available(),
                                reason="needs node and node_modules/pyodide (npm ci)")

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizers")
NAMES = ["gpt2", "neox", "qwen2", "llama3"]
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3 = QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")

CODE = r'''
from py_engine.tokenizer import Tokenizer
from py_engine.tokenizer import pretokenize as P
from py_engine.tokenizer.normalize import nfc
import sys, unicodedata
out = {"python": sys.version.split()[0], "unicode": unicodedata.unidata_version}
for name, text in FIXTURES.items():
    tok = Tokenizer.from_str(text)
    ids = [tok.encode(s) for s in STRINGS]
    out[name] = ids
    norm = nfc if tok.normalizer_name == "NFC" else (lambda s: s)
    plain = [tok.encode(s, add_special_tokens=False) for s in STRINGS]
    out[name + "_roundtrip"] = [i for i, (s, x) in enumerate(zip(STRINGS, plain))
                                if tok.decode(x, skip_special_tokens=False) != norm(s)]
    chunks = [BIG[j:j + 777] for j in range(0, len(BIG), 777)]
    streamed = [i for b in tok.encode_batches(chunks, block_chars=4096) for i in b]
    out[name + "_stream"] = streamed == tok.encode(BIG)
out["trained"] = Tokenizer.train([BIG], 600, ["<|endoftext|>"]).to_json()
out["split"] = {pat: [len(p) for p in P.splitter(pat)(SPLIT_TEXT)] for pat in PATTERNS}
out["nfc"] = [nfc(s) for s in NFC_STRINGS]
result = out
'''


def _strings():
    rng = random.Random(11)
    pieces = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\x1c", "'s", "'LL", "'ſ", "it",
              "42", "١٢٣", "²", "é", "e\u0301", "\u1ac1", "中文", "😀", "👩\u200d💻", "\u200f",
              "<|endoftext|>", "<|im_start|>", "<|eot_id|>", "x.y", "(a)", "\U00031350",
              "\u1c89", "\U00010d40", "\U00011bf0"]
    out = ["", " ", "hello world", "def f(x):\n    return x  \n"]
    for _ in range(1200):
        parts = []
        for _ in range(rng.randint(1, 10)):
            if rng.random() < 0.7:
                parts.append(rng.choice(pieces))
            else:
                c = rng.randint(0x20, 0x10FFFF)
                parts.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "x")
        out.append("".join(parts))
    import sysconfig
    with open(os.path.join(sysconfig.get_paths()["stdlib"], "argparse.py"), encoding="utf-8") as f:
        src = f.read()
    out += src.splitlines(keepends=True)[:800]
    return out, src[:60000] + "".join(out[:300])


def _nontrivial():
    from py_engine.tokenizer import unicode_tables as T
    out = {c for lo, hi in T.NFC_OPAQUE_RANGES for c in range(lo, hi + 1)}
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if unicodedata.combining(ch) or unicodedata.decomposition(ch)[:1] not in ("", "<"):
            out.add(c)
    return sorted(out)


@pytest.fixture(scope="module")
def run():
    strings, big = _strings()
    fixtures = {}
    for name in NAMES:
        with open(os.path.join(FIX, name + ".json"), encoding="utf-8") as f:
            fixtures[name] = f.read()
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    random.Random(3).shuffle(cps)
    split_text = "".join(map(chr, cps[:300000])) + "".join(
        chr(c) + random.Random(c).choice(" \n'sS1.") for c in cps[300000:400000])
    nfc_strings = [t.format(chr(c)) for c in _nontrivial()
                   for t in ("{}", "a\u0316{}\u0301", "a{}\u0316", "\u1100{}", "{}\u0301")]
    got = run_pyodide(CODE, {"FIXTURES": fixtures, "STRINGS": strings, "BIG": big,
                             "SPLIT_TEXT": split_text, "PATTERNS": [GPT2, QWEN2, LLAMA3],
                             "NFC_STRINGS": nfc_strings})
    return got, fixtures, strings, big, split_text, nfc_strings


def test_runtime_is_pyodide_with_unicode_16(run):
    got = run[0]
    assert got["python"].startswith("3.14")
    assert got["unicode"] == "16.0.0"


@pytest.mark.parametrize("name", NAMES)
def test_ids_match_library(run, name):
    got, fixtures, strings, big, _, _ = run
    lib = tokenizers.Tokenizer.from_str(fixtures[name])
    expected = [e.ids for e in lib.encode_batch(strings)]
    bad = [i for i, (a, b) in enumerate(zip(got[name], expected)) if a != b]
    assert not bad, "%d differ, first %r" % (len(bad), strings[bad[0]])
    assert got[name + "_roundtrip"] == []
    assert got[name + "_stream"] is True


def test_training_in_pyodide_gives_a_tokenizer_the_library_reads(run):
    got, _, strings, big, _, _ = run
    lib = tokenizers.Tokenizer.from_str(got["trained"])
    from py_engine.tokenizer import Tokenizer
    ours = Tokenizer.from_str(got["trained"])
    assert lib.encode(big).ids == ours.encode(big)


def test_split_and_nfc_match_library(run):
    got, _, _, _, split_text, nfc_strings = run
    for pat in (GPT2, QWEN2, LLAMA3):
        split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(pat), behavior="isolated")
        assert got["split"][pat] == [len(p) for p, _ in split.pre_tokenize_str(split_text)]
    lib = tokenizers.normalizers.NFC()
    expected = lib.normalize_str("\x00".join(nfc_strings)).split("\x00")
    bad = [s for s, a, b in zip(nfc_strings, got["nfc"], expected) if a != b]
    assert not bad, [[hex(ord(c)) for c in s] for s in bad[:5]]
