"""py_engine.tokenizer against the `tokenizers` library: identical ids on thousands of strings.

Fixtures (tests/fixtures/tokenizers/, written by tools/make_tokenizer_fixtures.py) are small
BPEs trained by `tokenizers` itself: GPT-2 (ByteLevel regex), GPT-NeoX (NFC + ByteLevel +
normalized whitespace added tokens), Qwen2 (NFC + Split + ByteLevel), Llama-3 (\\p{N}{1,3},
ignore_merges, BOS template), and GPT-2's vocab.json + merges.txt folder.
"""
import json
import os
import random
import sysconfig
import unicodedata

import pytest

from py_engine.tokenizer import Tokenizer, TokenizerError, UnsupportedTokenizer
from py_engine.tokenizer.normalize import nfc

tokenizers = pytest.importorskip("tokenizers")

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizers")
NAMES = ["gpt2", "neox", "qwen2", "llama3"]
SPECIALS = ["<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
            "<|eot_id|>"]


def fixture_path(name):
    return os.path.join(FIX, name + ".json")


def load_pair(config):
    """(ours, theirs) for one tokenizer.json dict."""
    text = json.dumps(config)
    return Tokenizer.from_str(text), tokenizers.Tokenizer.from_str(text)


# --------------------------------------------------------------------------- test strings

def stdlib_texts(n_files=60, seed=0):
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "site-packages")
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    rng = random.Random(seed)
    rng.shuffle(files)
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                out.append(f.read())
        except (UnicodeDecodeError, OSError):
            continue
        if len(out) == n_files:
            break
    return out


WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680",
              "\u2000", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
              "\x1c", "\x1d", "\x1e", "\x1f", "\u200b", "\u180e", "\ufeff"]
DIGITS = ["0", "7", "42", "1234567", "3.14159", "1,000,000", "١٢٣", "۴۵۶", "१२३", "²³", "½",
          "Ⅻ", "〇", "𝟙𝟚", "１２３", "0x1F", "1e-9", "v2.0.1"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M",
                "'LL", "'lL", "'D", "'ſ", "'x", "''", "'", "don't", "I'm", "you're", "HE'LL",
                "it'ſ", "'s'", "''s", "rock'n'roll", "’s"]
MARKS = ["\u0301", "\u0308", "\u0327", "\u0316", "\u0334", "\u0345", "\u05b0", "\u064b",
         "\u093c", "\u0e48", "\u1ac1", "\u1dfa", "\u20d7", "\ufe0f", "\u200d", "\U0001f3fd",
         "\u0b3e", "\u0dcf", "\u1161", "\u11a8", "\U00011f00", "\U000105c9"]
SCRIPTS = ["Hello", "wörld", "Straße", "ﬁne", "Ǆemal", "İstanbul", "Ωμέγα", "Привет", "中文字符",
           "日本語のテキスト", "한국어", "العربية", "עִבְרִית", "हिन्दी", "ไทย", "ქართული", "ᏣᎳᎩ",
           "𐌰𐌱𐌲", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀𪚥", "\U00031350", "Ⓐⓑ"]
EMOJI = ["😀", "👩\u200d💻", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "👍🏽", "❤️", "🇫🇷",
         "🫠", "🪿", "\U0001fae8", "#️⃣"]
RTL = ["\u200f", "\u200e", "\u202b", "\u202c", "\u2067", "\u2069", "שלום, עולם!", "مرحبا بالعالم"]
SYMBOLS = list("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~") + ["->", "==", "!=", "**", "//", "...", "—",
                                                       "…", "«»", "©", "€", "∑", "\x00", "\x7f"]
PIECES = WHITESPACE + DIGITS + CONTRACTIONS + MARKS + SCRIPTS + EMOJI + RTL + SYMBOLS


def random_code_point(rng):
    """Any Unicode scalar value, weighted toward assigned planes."""
    r = rng.random()
    if r < 0.3:
        c = rng.randint(0x20, 0x7E)
    elif r < 0.6:
        c = rng.randint(0x80, 0xFFFF)
    elif r < 0.8:
        c = rng.randint(0x10000, 0x3FFFF)
    else:
        c = rng.randint(0x40000, 0x10FFFF)
    if 0xD800 <= c <= 0xDFFF:
        c -= 0x1000
    return chr(c)


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(PIECES))
            elif r < 0.75:
                parts.append("".join(random_code_point(rng) for _ in range(rng.randint(1, 4))))
            elif r < 0.9:
                parts.append("".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 30))))
            else:
                parts.append(rng.choice(SPECIALS) if rng.random() < 0.5
                             else rng.choice(SPECIALS)[:rng.randint(1, 8)])
        out.append("".join(parts))
    return out


def whitespace_strings():
    out = [""]
    for ws in WHITESPACE:
        for n in (1, 2, 3, 5, 24, 25, 26, 50):
            out += [ws * n, "a" + ws * n, ws * n + "b", "a" + ws * n + "b", "x." + ws * n + "!y",
                    ws * n + "\n" + ws * 2 + "z"]
    indents = ["    ", "        ", "\t", "\t\t", "  ", " " * 12]
    for ind in indents:
        out.append("def f(x):\n" + ind + "return x\n" + ind + "\n\n" + ind + "pass  \n")
    return out


def small_cases():
    out = []
    for p in PIECES:
        out += [p, " " + p, p + " ", "a" + p, p + "a", "1" + p + "2", p * 3, "'" + p, p + "'s"]
    for c in CONTRACTIONS:
        out += ["it" + c, " it" + c + " x", c.upper(), "x" + c + c]
    for d in DIGITS:
        out += [d, " " + d, "a" + d + "b", d + "," + d, d * 4]
    for s in SPECIALS:
        out += [s, "a" + s + "b", s + s, " " + s + " ", s + "\n" + s, "x" + s[:-1],
                "<|" + s, s + "|>"]
    return out


def all_strings():
    texts = stdlib_texts()
    lines = []
    for t in texts[:25]:
        lines.extend(t.splitlines(keepends=True))
    rng = random.Random(1)
    lines = rng.sample(lines, min(len(lines), 2500))
    return (texts + lines + random_strings(1500, seed=2) + whitespace_strings()
            + small_cases())


STRINGS = all_strings()


def test_enough_strings():
    assert len(STRINGS) > 5000


# --------------------------------------------------------------------------- parity

@pytest.fixture(scope="module", params=NAMES + ["gpt2_folder"])
def pair(request):
    name = request.param
    if name == "gpt2_folder":
        folder = os.path.join(FIX, "gpt2_folder")
        theirs = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(
            os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")))
        theirs.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        theirs.decoder = tokenizers.decoders.ByteLevel()
        theirs.add_special_tokens(["<|endoftext|>"])
        return name, Tokenizer.from_file(folder), theirs
    return name, Tokenizer.from_file(fixture_path(name)), tokenizers.Tokenizer.from_file(
        fixture_path(name))


def test_identical_ids(pair):
    name, ours, theirs = pair
    expected = [e.ids for e in theirs.encode_batch(STRINGS)]
    got = [ours.encode(s) for s in STRINGS]
    bad = [(s, e, g) for s, e, g in zip(STRINGS, expected, got) if g != e]
    assert not bad, "%s: %d of %d differ, first: %r" % (name, len(bad), len(STRINGS), bad[0])


def test_identical_ids_without_special_tokens(pair):
    name, ours, theirs = pair
    sample = STRINGS[::7]
    expected = [e.ids for e in theirs.encode_batch(sample, add_special_tokens=False)]
    assert [ours.encode(s, add_special_tokens=False) for s in sample] == expected


def test_round_trip(pair):
    name, ours, _ = pair
    normalize = nfc if ours.normalizer_name == "NFC" else (lambda s: s)
    for s in STRINGS:
        ids = ours.encode(s, add_special_tokens=False)
        assert ours.decode(ids, skip_special_tokens=False) == normalize(s), s


def test_decode_matches_library(pair):
    name, ours, theirs = pair
    rng = random.Random(3)
    n = ours.vocab_size
    seqs = [e.ids for e in theirs.encode_batch(STRINGS[::5])]
    # random id sequences: cut UTF-8 sequences, unknown ids, special tokens
    seqs += [[rng.randrange(n + 5) for _ in range(rng.randint(0, 20))] for _ in range(1000)]
    for ids in seqs:
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(
                ids, skip_special_tokens=skip), (ids, skip)


def test_vocabulary(pair):
    name, ours, theirs = pair
    assert ours.vocab_size == theirs.get_vocab_size()
    assert ours.get_vocab() == theirs.get_vocab()
    for tok, tid in theirs.get_vocab().items():
        assert ours.token_to_id(tok) == theirs.token_to_id(tok) == tid
        assert ours.id_to_token(tid) == theirs.id_to_token(tid)
    assert ours.token_to_id("no such token") is None
    assert ours.id_to_token(10 ** 6) is None


def test_llama3_bos_and_specials():
    ours = Tokenizer.from_file(fixture_path("llama3"))
    bos = ours.token_to_id("<|begin_of_text|>")
    assert ours.encode("hi")[0] == bos
    assert ours.encode("hi", add_special_tokens=False)[0] != bos
    assert ours.encode("", add_special_tokens=True) == [bos]
    ids = ours.encode("a<|eot_id|>b", add_special_tokens=False)
    assert ours.token_to_id("<|eot_id|>") in ids
    assert ours.decode(ids) == "ab"
    assert ours.decode(ids, skip_special_tokens=False) == "a<|eot_id|>b"
    assert set(ours.special_tokens) == {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}


def test_neox_whitespace_tokens_split_before_pretokenizing():
    ours = Tokenizer.from_file(fixture_path("neox"))
    four = ours.token_to_id("    ")
    assert four is not None and four >= len(ours.model.vocab)
    assert four in ours.encode("def f():\n    return 1")


def test_folder_prefers_tokenizer_json(tmp_path):
    with open(fixture_path("qwen2"), encoding="utf-8") as f:
        (tmp_path / "tokenizer.json").write_text(f.read(), encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        with open(os.path.join(FIX, "gpt2_folder", name), encoding="utf-8") as f:
            (tmp_path / name).write_text(f.read(), encoding="utf-8")
    tok = Tokenizer.from_file(tmp_path)
    assert tok.normalizer_name == "NFC"  # qwen2's, not the GPT-2 pair's
    assert tok.encode("x = 12345") == Tokenizer.from_file(fixture_path("qwen2")).encode("x = 12345")


def test_save_and_reload(tmp_path, pair):
    name, ours, theirs = pair
    path = tmp_path / "tok.json"
    ours.save(path)
    again = Tokenizer.from_file(path)
    lib = tokenizers.Tokenizer.from_file(str(path))
    for s in STRINGS[::50]:
        assert again.encode(s) == ours.encode(s) == lib.encode(s).ids


# --------------------------------------------------------------------------- variants

def _config(name):
    with open(fixture_path(name), encoding="utf-8") as f:
        return json.load(f)


def _compare(config, strings=None):
    ours, theirs = load_pair(config)
    strings = STRINGS[::3] if strings is None else strings
    expected = [e.ids for e in theirs.encode_batch(strings)]
    for s, e in zip(strings, expected):
        assert ours.encode(s) == e, s
    return ours, theirs


def test_add_prefix_space_bytelevel():
    cfg = _config("gpt2")
    cfg["pre_tokenizer"]["add_prefix_space"] = True
    _compare(cfg)


def test_add_prefix_space_after_split():
    cfg = _config("qwen2")
    cfg["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True
    _compare(cfg)


def test_gpt2_pattern_as_split():
    cfg = _config("gpt2")
    from py_engine.tokenizer.pretokenize import GPT2_PATTERN
    cfg["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT2_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False}]}
    _compare(cfg)


def test_split_then_bytelevel_regex():
    cfg = _config("qwen2")
    cfg["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = True
    _compare(cfg)


def test_added_token_flags():
    cfg = _config("gpt2")
    n = max(cfg["model"]["vocab"].values()) + 1
    specs = [("<mask>", dict(lstrip=True, rstrip=True, normalized=False, special=True)),
             ("[word]", dict(single_word=True, normalized=False, special=False)),
             ("naïve", dict(normalized=True, special=False)),
             ("def", dict(normalized=True, special=False, rstrip=True)),
             ("<|endoftext|>", None)]
    for i, (content, flags) in enumerate(specs):
        if flags is None:
            continue
        cfg["added_tokens"].append(dict({"id": n + i, "content": content, "single_word": False,
                                         "lstrip": False, "rstrip": False}, **flags))
    strings = ["a <mask> b", "a<mask>b", "  <mask>  ", "<mask><mask>", "x [word] y",
               "x[word]y", "[word]", "a naïve b", "naïvete", "def f(): pass", "define  x",
               "\t<mask>\u3000def\u2000[word]\n"] + STRINGS[::20]
    _compare(cfg, strings)


def test_nfc_on_normalized_added_tokens():
    cfg = _config("neox")
    n = max(t["id"] for t in cfg["added_tokens"]) + 1
    cfg["added_tokens"].append({"id": n, "content": "cafe\u0301", "single_word": False,
                                "lstrip": False, "rstrip": False, "normalized": True,
                                "special": False})
    ours, _ = _compare(cfg, ["un café", "un cafe\u0301", "cafe\u0301\u0301", "cafés"])
    assert n in ours.encode("un cafe\u0301")


def _synthetic(vocab_tokens, merges, **model):
    """A byte-level tokenizer.json over `vocab_tokens` (byte-level strings)."""
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab_tokens))}
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
          "use_regex": True}
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
         "ignore_merges": False, "vocab": vocab, "merges": [list(x) for x in merges]}
    m.update(model)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
            "model": m}


def test_byte_fallback_and_unknown_characters():
    base = list("abcdefghijklmnopqrstuvwxyzĠ")
    fallback = ["<0x%02X>" % b for b in range(256)]
    strings = ["hello world", "héllo wörld", "ABC def", "😀 x", "", "a\nb", "ÿ"]
    _compare(_synthetic(base + fallback + ["he", "hel"], [("h", "e"), ("he", "l")],
                        byte_fallback=True), strings)
    _compare(_synthetic(["<unk>"] + base, [], unk_token="<unk>"), strings)
    _compare(_synthetic(["<unk>"] + base, [], unk_token="<unk>", fuse_unk=True), strings)
    _compare(_synthetic(base, []), strings)  # unknown characters are dropped


def test_ignore_merges():
    base = list("abcdĠ")
    cfg = _synthetic(base + ["ab", "cd", "abcd", "bcd", "Ġab"], [("a", "b"), ("c", "d")],
                     ignore_merges=True)
    ours, _ = _compare(cfg, ["abcd", "abcd abcd", "bcd", " ab", "dcba", "abcdabcd"])
    assert ours.encode("abcd") == [ours.token_to_id("abcd")]


def test_random_merge_tables_including_duplicate_targets():
    """Random vocabularies where several pairs merge into one token (the library's queue
    with stale entries), words up to 300 symbols (our queue path), and small ones (scan)."""
    rng = random.Random(5)
    alphabet = "abcd"
    for trial in range(30):
        tokens = list(alphabet) + ["Ġ"]
        merges = []
        for _ in range(rng.randint(5, 60)):
            x, y = rng.choice(tokens), rng.choice(tokens)
            merges.append((x, y))
            if x + y not in tokens:
                tokens.append(x + y)
        cfg = _synthetic(tokens, merges)
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
                 for _ in range(200)]
        words += ["".join(rng.choice(alphabet) for _ in range(300)) for _ in range(5)]
        ours, theirs = _compare(cfg, words)
        if not ours.model.has_duplicate_targets:
            ours.model.has_duplicate_targets = True  # force the queue path, same answers
            ours._cache.clear()
            for w in words[:50]:
                assert ours.encode(w) == theirs.encode(w).ids


def test_long_pretokens():
    ours, theirs = load_pair(_config("qwen2"))
    for s in ["=" * 5000, " " * 3000 + "x", "a" * 4000, "1" * 999, "é" * 700, "😀" * 300,
              ("ab" * 2000) + "'s", "\n" * 1000]:
        assert ours.encode(s) == theirs.encode(s).ids


# --------------------------------------------------------------------------- bad files

def test_truncated_json(tmp_path):
    with open(fixture_path("gpt2"), encoding="utf-8") as f:
        text = f.read()
    p = tmp_path / "t.json"
    p.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.from_file(p)
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.from_str("")


def test_not_utf8(tmp_path):
    p = tmp_path / "t.json"
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(TokenizerError, match="UTF-8"):
        Tokenizer.from_file(p)


def test_merge_with_unknown_token():
    cfg = _config("gpt2")
    cfg["model"]["merges"].append(["Ġnot", "Ġin_vocab"])
    with pytest.raises(TokenizerError, match="not in the vocab"):
        Tokenizer.from_config(cfg)
    cfg = _config("gpt2")
    cfg["model"]["merges"].insert(0, ["a", "b"])
    cfg["model"]["vocab"].pop("ab", None)
    with pytest.raises(TokenizerError, match="'ab', which is not in the vocab"):
        Tokenizer.from_config(cfg)


def test_bad_merge_entries():
    cfg = _config("gpt2")
    cfg["model"]["merges"][3] = "a b c"
    with pytest.raises(TokenizerError, match="merge 3"):
        Tokenizer.from_config(cfg)
    cfg = _config("gpt2")
    cfg["model"]["merges"][3] = ["a"]
    with pytest.raises(TokenizerError, match="merge 3"):
        Tokenizer.from_config(cfg)


def test_bad_vocab():
    cfg = _config("gpt2")
    cfg["model"]["vocab"]["a"] = "one"
    with pytest.raises(TokenizerError, match="'a'"):
        Tokenizer.from_config(cfg)
    cfg = _config("gpt2")
    del cfg["model"]["vocab"]
    with pytest.raises(TokenizerError, match="vocab"):
        Tokenizer.from_config(cfg)
    with pytest.raises(TokenizerError, match="model"):
        Tokenizer.from_config({"version": "1.0"})


@pytest.mark.parametrize("section,value,needle", [
    ("model", {"type": "WordPiece", "vocab": {}}, "WordPiece"),
    ("model", {"type": "Unigram", "vocab": []}, "Unigram"),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "▁"}, "Metaspace"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\w+|\W"}, "behavior": "Isolated",
         "invert": False}, {"type": "ByteLevel", "use_regex": False}]}, r"\\w+|\\W"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}]}, "Digits"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "ByteLevel"}, {"type": "Split", "pattern": {"Regex": "x"},
                                "behavior": "Isolated"}]}, "last"),
    ("pre_tokenizer", None, "null"),
    ("normalizer", {"type": "Lowercase"}, "Lowercase"),
    ("normalizer", {"type": "NFKC"}, "NFKC"),
    ("decoder", {"type": "WordPiece"}, "WordPiece"),
    ("post_processor", {"type": "BertProcessing"}, "BertProcessing"),
])
def test_unsupported_parts_are_refused_by_name(section, value, needle):
    cfg = _config("gpt2")
    cfg[section] = value
    with pytest.raises(UnsupportedTokenizer, match=needle if needle != r"\\w+|\\W"
                       else r"\\\\w\+\|\\\\W"):
        Tokenizer.from_config(cfg)


def test_dropout_refused():
    cfg = _config("gpt2")
    cfg["model"]["dropout"] = 0.1
    with pytest.raises(UnsupportedTokenizer, match="dropout"):
        Tokenizer.from_config(cfg)


def test_bad_merges_txt(tmp_path):
    folder = os.path.join(FIX, "gpt2_folder")
    with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    lines[5] = "Ġa b c"
    (tmp_path / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        (tmp_path / "vocab.json").write_text(f.read(), encoding="utf-8")
    with pytest.raises(TokenizerError, match="line 6"):
        Tokenizer.from_file(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(TokenizerError, match="neither"):
        Tokenizer.from_file(tmp_path)


def test_encode_rejects_bytes():
    tok = Tokenizer.from_file(fixture_path("gpt2"))
    with pytest.raises(TypeError):
        tok.encode(b"abc")


def test_python_isspace_is_not_white_space():
    """Documented difference: `\\s` in the library is White_Space; str.isspace() adds the
    information separators U+001C..U+001F, which must split like punctuation."""
    ours, theirs = load_pair(_config("gpt2"))
    for c in "\x1c\x1d\x1e\x1f":
        assert c.isspace()
        s = "a" + c + c + " b"
        assert ours.encode(s) == theirs.encode(s).ids
    assert unicodedata.category("\x1c") == "Cc"


def test_added_token_ids_follow_the_library():
    """The library re-derives added-token ids on load (vocab id for a known content, else the
    next free id) and ignores the written ones; so do we."""
    cfg = _config("gpt2")
    n = len(cfg["model"]["vocab"])
    flags = {"single_word": False, "lstrip": False, "rstrip": False}
    cfg["added_tokens"] += [dict(flags, **t) for t in [
        {"id": 99999, "content": "<new>", "special": True, "normalized": False},
        {"id": 5, "content": "<also new>", "special": False, "normalized": True},
        {"id": 7, "content": "return", "special": False, "normalized": False},
        {"id": 99998, "content": "<new>", "special": True, "normalized": False},  # duplicate
    ]]
    ours, theirs = load_pair(cfg)
    for content in ("<new>", "<also new>", "return", "<|endoftext|>"):
        assert ours.token_to_id(content) == theirs.token_to_id(content), content
    assert ours.token_to_id("<new>") == n
    s = "x<new>y <also new> return returned"
    assert ours.encode(s) == theirs.encode(s).ids
    assert ours.decode(ours.encode(s)) == theirs.decode(theirs.encode(s).ids)
