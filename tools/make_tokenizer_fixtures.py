"""Generate the tokenizer's Unicode tables and its test fixtures (host only, needs `tokenizers`).

    python tools/make_tokenizer_fixtures.py tables     # -> py_engine/tokenizer/unicode_tables.py
    python tools/make_tokenizer_fixtures.py fixtures   # -> tests/fixtures/tokenizers/*
    python tools/make_tokenizer_fixtures.py all

`tables` asks the `tokenizers` library itself what its engines do, so that our pure-Python
tokenizer copies them rather than whatever `unicodedata` the running Python happens to have:

* `\\p{L}`, `\\p{N}` and `\\s` as its regex engine (Oniguruma, Unicode 16 in tokenizers 0.23)
  sees them: every code point is run through a `Split` pre-tokenizer that keeps only matches.
* the letters `(?i:'s|'t|...)` accepts (Oniguruma case folding adds U+017F LONG S to `s`).
* the code points its NFC normalizer treats as inert although Unicode 16 gives them a combining
  class or a decomposition: its normalization tables are older (Unicode ~10) than any Python we
  run on (3.11 = Unicode 14, Pyodide 3.14 = Unicode 16). We split NFC around those code points,
  which is exactly what an engine that does not know them does. Telling "nontrivial in Unicode
  16" needs a Python with Unicode 16 data: we run a small dump inside Pyodide (node +
  node_modules/pyodide), or read one given with --u16-json.

`fixtures` trains small byte-level BPEs with `tokenizers` (GPT-2, GPT-NeoX, Qwen2 and Llama-3
style) on Python standard library source plus some multilingual text, and writes them compactly.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES_PATH = os.path.join(ROOT, "py_engine", "tokenizer", "unicode_tables.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

ALL_CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


# --------------------------------------------------------------------------- tables

_U16_DUMP = r"""
import json, unicodedata
ccc = {}
dec = {}
for c in range(0x110000):
    ch = chr(c)
    k = unicodedata.combining(ch)
    if k:
        ccc[c] = k
    d = unicodedata.decomposition(ch)
    if d and not d.startswith('<'):
        dec[c] = [int(x, 16) for x in d.split()]
json.dumps({"version": unicodedata.unidata_version, "ccc": ccc, "decomp": dec})
"""

_NODE_RUNNER = r"""
import { loadPyodide } from "%s";
const py = await loadPyodide({indexURL: "%s"});
const out = await py.runPythonAsync(%s);
process.stdout.write(out);
"""


def unicode16_data(path=None):
    """Combining classes and canonical decompositions of Unicode 16 ({cp: int}, {cp: [cp]})."""
    if path:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    elif unicodedata.unidata_version >= "16.0.0":
        ns = {}
        exec(_U16_DUMP.replace("json.dumps(", "result = json.dumps("), ns)
        data = json.loads(ns["result"])
    else:
        pyodide = os.path.join(ROOT, "node_modules", "pyodide")
        if not os.path.exists(os.path.join(pyodide, "pyodide.mjs")):
            sys.exit("need Unicode 16 data: run `npm ci` (Pyodide) or pass --u16-json")
        with tempfile.NamedTemporaryFile("w", suffix=".mjs", delete=False) as f:
            f.write(_NODE_RUNNER % (os.path.join(pyodide, "pyodide.mjs"), pyodide + "/",
                                    json.dumps(_U16_DUMP)))
            runner = f.name
        try:
            out = subprocess.run(["node", runner], check=True, capture_output=True,
                                 text=True).stdout
        finally:
            os.unlink(runner)
        data = json.loads(out)
    if data["version"] != "16.0.0":
        sys.exit(f"expected Unicode 16.0.0 data, got {data['version']}")
    return ({int(k): v for k, v in data["ccc"].items()},
            {int(k): v for k, v in data["decomp"].items()})


def _kept_by(pattern, text, sep=None):
    """Pieces of `text` that `pattern` matches, as the tokenizers library's Oniguruma finds them."""
    from tokenizers import Regex, pre_tokenizers
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    return [p for p, _ in split.pre_tokenize_str(text)]


def probe_class(pattern):
    text = "".join(map(chr, ALL_CODE_POINTS))
    cps = set()
    for piece in _kept_by(pattern, text):
        cps.update(map(ord, piece))
    return cps


def probe_contraction_letters():
    """For each letter of 's t re ve m ll d', the characters (?i:...) accepts in its place."""
    words = ["s", "t", "re", "ve", "m", "ll", "d"]
    out = {}
    for w in words:
        for i, letter in enumerate(w):
            accepted = []
            probes = ["'" + w[:i] + chr(c) + w[i + 1:] for c in ALL_CODE_POINTS if c != 0]
            kept = set(_kept_by("(?i:'%s)" % w, "\x00".join(probes)))
            for c in ALL_CODE_POINTS:
                if c and ("'" + w[:i] + chr(c) + w[i + 1:]) in kept:
                    accepted.append(c)
            key = letter
            prev = out.get(key)
            if prev is not None and prev != accepted:
                sys.exit(f"case folding of {letter!r} differs by position: {prev} vs {accepted}")
            out[key] = accepted
    return out


def probe_nfc_opaque(ccc16, dec16):
    """Code points Unicode 16 normalizes but the tokenizers NFC (old tables) leaves inert."""
    from tokenizers import normalizers
    nfd = normalizers.NFD()

    def crate_nfd(strings):
        out = nfd.normalize_str("\x00".join(strings)).split("\x00")
        assert len(out) == len(strings)
        return out

    # combining class known? put the mark against one of another class, in the wrong order
    marks = sorted(ccc16)
    probes = []
    for c in marks:
        other = "\u0334" if ccc16[c] > 1 else "\u0301"  # ccc 1 / ccc 230
        probes.append("a" + chr(c) + other if ccc16[c] > 1 else "a" + other + chr(c))
    ccc_known = {c for c, p, o in zip(marks, probes, crate_nfd(probes)) if o != p}
    # decomposition known?
    composites = sorted(dec16)
    dec_known = {c for c, o in zip(composites, crate_nfd([chr(c) for c in composites]))
                 if o != chr(c)}
    opaque = set()
    opaque.update(c for c in marks if c not in ccc_known)
    opaque.update(c for c in composites if c not in dec_known)
    # starters that only matter as parts of compositions the crate does not know
    parts = {}
    for p, d in dec16.items():
        for c in d:
            parts.setdefault(c, []).append(p)
    for c, ps in parts.items():
        if c in ccc16 or c in dec16:
            continue
        if not any(p in dec_known for p in ps):
            opaque.add(c)
    return opaque


def to_ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [tuple(r) for r in out]


def _fmt_ranges(name, ranges, comment):
    lines = [f"# {comment}", f"{name} = ("]
    row = "   "
    for lo, hi in ranges:
        item = f" (0x{lo:X}, 0x{hi:X}),"
        if len(row) + len(item) > 99:
            lines.append(row)
            row = "   "
        row += item
    if row.strip():
        lines.append(row)
    lines.append(")")
    return "\n".join(lines)


def make_tables(u16_json=None):
    import tokenizers
    ccc16, dec16 = unicode16_data(u16_json)
    letters = probe_class(r"\p{L}+")
    numbers = probe_class(r"\p{N}+")
    spaces = probe_class(r"\s+")
    folds = probe_contraction_letters()
    opaque = probe_nfc_opaque(ccc16, dec16)
    parts = [
        '"""Unicode tables for the tokenizer. GENERATED by tools/make_tokenizer_fixtures.py tables',
        f"from tokenizers {tokenizers.__version__} (its Oniguruma regex classes and NFC normalizer)",
        'and Unicode 16.0.0 data. Do not edit by hand."""',
        "",
        _fmt_ranges("LETTER_RANGES", to_ranges(letters), r"\p{L} (General_Category L*)"),
        "",
        _fmt_ranges("NUMBER_RANGES", to_ranges(numbers), r"\p{N} (General_Category N*)"),
        "",
        _fmt_ranges("SPACE_RANGES", to_ranges(spaces),
                    r"\s (= White_Space; note Python's str.isspace() adds U+001C..U+001F)"),
        "",
        "# (?i:'s|'t|'re|'ve|'m|'ll|'d): the characters accepted for each letter",
        "CONTRACTION_FOLDS = {",
        *[f"    {k!r}: {''.join(chr(c) for c in v)!r}," for k, v in sorted(folds.items())],
        "}",
        "",
        _fmt_ranges("NFC_OPAQUE_RANGES", to_ranges(opaque),
                    "normalized by Unicode 16 but inert for the tokenizers NFC (older tables)"),
        "",
    ]
    with open(TABLES_PATH, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    print(f"wrote {TABLES_PATH}: L {len(letters)} N {len(numbers)} S {len(spaces)} "
          f"opaque {len(opaque)} folds {folds}")


# --------------------------------------------------------------------------- fixtures

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog. It's 12:30 and we've 3,141 items; they'll go.",
    "Größe, Straße, Äpfel und Öl — naïve café, résumé, coöperate, façade, señor, São Paulo.",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Съешь же ещё этих мягких булок.",
    "Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.",
    "我能吞下玻璃而不伤身体。人工智能正在改变世界，深度学习模型需要大量数据。",
    "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は日本の首都です。",
    "키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다. 한국어 텍스트.",
    "صِف خَلقَ خَودِ كَمِثلِ الشَمسِ إِذ بَزَغَت — يَحظى الضَجيعُ بِها نَجلاءَ مِعطارِ",
    "עטלף אבק נס דרך מזגן שהתפוצץ כי חם. שלום עולם!",
    "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम।",
    "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "Emoji: 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 ❤️ 🇫🇷 🤖✨ — and math: ∀x∈ℝ, x²≥0; ∑ᵢ aᵢ = ∞.",
    "Tiếng Việt có dấu: Người ta thường nói rằng học, học nữa, học mãi.",
    "Ελληνικά, ქართული ენა, Հայերեն, ᏣᎳᎩ, ᐃᓄᒃᑎᑐᑦ, ትግርኛ, ᠮᠣᠩᠭᠣᠯ",
]


def corpus(limit_bytes=1_500_000, seed=0):
    """Python stdlib source (deterministic file order) plus multilingual lines."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "idlelib"))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    rng = random.Random(seed)
    rng.shuffle(files)
    texts, total = [], 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text)
        if total > limit_bytes:
            break
    for _ in range(30):
        texts.extend(MULTILINGUAL)
    return texts


def _train(pre_tokenizer, normalizer, vocab_size, special, texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _write(tok_or_json, name):
    data = json.loads(tok_or_json.to_str()) if not isinstance(tok_or_json, dict) else tok_or_json
    path = os.path.join(FIXTURES, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make_fixtures():
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    os.makedirs(FIXTURES, exist_ok=True)
    texts = corpus()

    # GPT-2: ByteLevel(use_regex=True), no normalizer
    gpt2 = _train(pre_tokenizers.ByteLevel(add_prefix_space=False), None, 2500,
                  ["<|endoftext|>"], texts)
    _write(gpt2, "gpt2.json")
    folder = os.path.join(FIXTURES, "gpt2_folder")
    os.makedirs(folder, exist_ok=True)
    gpt2.model.save(folder)  # vocab.json + merges.txt

    # GPT-NeoX (Mamba): NFC + ByteLevel, special tokens first, and runs of spaces as
    # non-special *normalized* added tokens (ids past the BPE vocab), as EleutherAI's file has.
    neox = _train(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True),
                  normalizers.NFC(), 2500, ["<|endoftext|>", "<|padding|>"], texts)
    neox.add_tokens([AddedToken(" " * n, normalized=True, special=False)
                     for n in range(24, 1, -1)])
    _write(neox, "neox.json")

    # Qwen2: NFC + Split(pattern) + ByteLevel(use_regex=False)
    qwen = _train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        normalizers.NFC(), 2500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], texts)
    _write(qwen, "qwen2.json")

    # Llama-3: Split(\p{N}{1,3} pattern) + ByteLevel, ignore_merges, BOS by TemplateProcessing
    llama = _train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        None, 2000, [], texts)
    data = json.loads(llama.to_str())
    n = len(data["model"]["vocab"])
    data["model"]["ignore_merges"] = True
    data["added_tokens"] = [
        {"id": n + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, c in enumerate(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])]
    data["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n],
                                                  "tokens": ["<|begin_of_text|>"]}}}]}
    _write(data, "llama3.json")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["tables", "fixtures", "all"])
    ap.add_argument("--u16-json", help="Unicode 16 dump (else computed inside Pyodide via node)")
    args = ap.parse_args(argv)
    if args.what in ("tables", "all"):
        make_tables(args.u16_json)
    if args.what in ("fixtures", "all"):
        make_fixtures()


if __name__ == "__main__":
    main()
