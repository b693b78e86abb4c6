"""Unicode behaviour of the tokenizer against the `tokenizers` library, on every code point.

What we found (and what unicode_tables.py encodes):
* the library's regex engine (Oniguruma) has Unicode 16 tables: `\\p{L}` and `\\p{N}` include
  letters and digits this host's Python (3.11, Unicode 14) calls unassigned (U+1C89, U+10D40,
  U+11BF0, ...); Pyodide's 3.14 is Unicode 16 like the library. Our tables are read off the
  library, so both Pythons split alike.
* `\\s` is White_Space (25 code points); str.isspace() also accepts U+001C..U+001F.
* `(?i:'s)` also accepts U+017F LATIN SMALL LETTER LONG S.
* the library's NFC uses Unicode ~10 normalization data: marks added later (U+1AC1, U+08CA,
  U+1DFA, ...) are not reordered or composed by it. We split NFC around those characters.
"""
import random
import unicodedata

import pytest

from py_engine.tokenizer import pretokenize as P
from py_engine.tokenizer import unicode_tables as T
from py_engine.tokenizer.normalize import nfc

tokenizers = pytest.importorskip("tokenizers")

ALL = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]


def ranges_contain(ranges, c):
    return any(lo <= c <= hi for lo, hi in ranges)


def library_pieces(pattern, text):
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated")
    return [p for p, _ in split.pre_tokenize_str(text)]


@pytest.fixture(scope="module")
def texts():
    seq = "".join(map(chr, ALL))
    shuffled = list(seq)
    random.Random(0).shuffle(shuffled)
    # mixed with the characters the patterns treat specially, so classes meet them
    rng = random.Random(1)
    special = list(" \t\n\r'sStTrReEvVmMlLdDſ0123456789.-") + ["\r\n", "  ", "'s", "'LL"]
    mixed = "".join(c if rng.random() < 0.6 else c + rng.choice(special)
                    for c in shuffled[:150000])
    return [seq, "".join(shuffled[150000:550000]), mixed]


@pytest.mark.parametrize("pattern", [P.GPT2_PATTERN, P.QWEN2_PATTERN, P.LLAMA3_PATTERN],
                         ids=["gpt2", "qwen2", "llama3"])
def test_split_patterns_on_every_code_point(pattern, texts):
    ours = P.splitter(pattern)
    for text in texts:
        expected = library_pieces(pattern, text)
        got = ours(text)
        if got != expected:
            i = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            pytest.fail("first difference at piece %d: ours %r, library %r"
                        % (i, got[i:i + 3], expected[i:i + 3]))


def test_tables_are_not_this_pythons_unicodedata():
    """Document the version gap: characters the library (Unicode 16) classifies that this
    Python may not know; our tables follow the library either way."""
    newer = [0x1C89, 0x10D40, 0x11BF0, 0x1E5D0, 0x16D40]  # Unicode 16 letters / digits
    for c in newer:
        assert ranges_contain(T.LETTER_RANGES, c) or ranges_contain(T.NUMBER_RANGES, c)
    if unicodedata.unidata_version < "16.0.0":
        assert all(unicodedata.category(chr(c)) == "Cn" for c in newer)


def test_white_space_is_not_isspace():
    ws = {c for lo, hi in T.SPACE_RANGES for c in range(lo, hi + 1)}
    isspace = {c for c in range(0x110000) if chr(c).isspace()}
    assert len(ws) == 25
    assert isspace - ws == {0x1C, 0x1D, 0x1E, 0x1F}
    assert ws - isspace == set()


def test_contraction_case_folding():
    assert T.CONTRACTION_FOLDS["s"] == "Ssſ"
    assert all(len(v) == 2 for k, v in T.CONTRACTION_FOLDS.items() if k != "s")
    q = P.splitter(P.QWEN2_PATTERN)
    assert q("it'ſ") == ["it", "'ſ"]
    assert P.splitter(P.GPT2_PATTERN)("IT'S") == ["IT", "'", "S"]
    assert q("IT'S") == ["IT", "'S"]


def _nontrivial():
    """Code points this Python normalizes, plus the ones the tables mark inert."""
    out = set()
    for c in ALL:
        ch = chr(c)
        if unicodedata.combining(ch) or unicodedata.decomposition(ch)[:1] not in ("", "<"):
            out.add(c)
    out.update(c for lo, hi in T.NFC_OPAQUE_RANGES for c in range(lo, hi + 1))
    return sorted(out)


def test_nfc_matches_library_on_every_nontrivial_code_point():
    lib = tokenizers.normalizers.NFC()
    templates = ["{}", "a{}", "{}\u0301", "a\u0301{}", "a\u0316{}", "a{}\u0316", "a{}\u0301",
                 "\u1100{}", "{}\u1161", "e\u0334{}", "{}{}", "a{}{}\u0300", "\u0b47{}"]
    cps = _nontrivial()
    for t in templates:
        strings = [t.format(chr(c), chr(c)) for c in cps]
        expected = lib.normalize_str("\x00".join(strings)).split("\x00")
        for s, e in zip(strings, expected):
            assert nfc(s) == e, [hex(ord(x)) for x in s]


def test_nfc_random_mark_soup():
    lib = tokenizers.normalizers.NFC()
    cps = _nontrivial()
    rng = random.Random(4)
    bases = "aeoAEnNcsSzZ\u1100\u1161\u11a8가\u0915\u0b47\u0dd9 x."
    strings = []
    for _ in range(20000):
        strings.append("".join(rng.choice(bases) if rng.random() < 0.35 else chr(rng.choice(cps))
                               for _ in range(rng.randint(1, 10))))
    expected = lib.normalize_str("\x00".join(strings)).split("\x00")
    assert [nfc(s) for s in strings] == expected


def test_nfc_opaque_example():
    # U+1AC1 (ccc 230, Unicode 14) after U+0316 (ccc 220) and before U+0301 (230): Unicode 14+
    # would compose a+U+0301 past it; the library does not know U+1AC1 and leaves all as is.
    s = "a\u0316\u1ac1\u0301"
    assert nfc(s) == tokenizers.normalizers.NFC().normalize_str(s)
