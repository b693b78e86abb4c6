"""Pre-tokenizer split patterns of GPT-2, GPT-NeoX, Qwen2 and Llama-3, without the `regex` module.

The `tokenizers` library runs these patterns with Oniguruma, a backtracking engine. Python's
stdlib `re` is also a backtracking engine with the same leftmost-first alternation, greedy
quantifiers and lookahead, so a pattern translated construct by construct splits text into the
same pieces. What `re` lacks is `\\p{L}` / `\\p{N}` and Oniguruma's `\\s`; we spell them out as
explicit character classes built from `unicode_tables` (which were read off the `tokenizers`
library itself, Unicode 16), so the result does not depend on the running Python's Unicode
version (host 3.11 = Unicode 14, Pyodide 3.14 = Unicode 16):

    \\p{L}  -> [<General_Category L*>]          \\p{N} -> [<General_Category N*>]
    \\s     -> [<White_Space>]  (NOT str.isspace: U+001C..U+001F are not White_Space)
    \\S     -> [^<White_Space>]  so  \\s+(?!\\S)  ->  [ws]+(?![^ws])
    (?i:'s|'t|...) -> '(?:[Ssſ]|[Tt]|[Rr][Ee]|...)   (Oniguruma folds U+017F LONG S to s)

How `\\s+(?!\\S)` behaves (and why it exists): on "a   b" it takes the whitespace run minus its
last character ("  "), leaving " b" to the ` ?\\p{L}+` branch, so a word keeps its leading space;
at the end of the text it takes the whole run. Qwen2/Llama-3's `\\s*[\\r\\n]+` takes a
whitespace run up to and including its last newline.

Only the pattern strings below are accepted; anything else is refused by name (a wrong split
would silently change every id).

Speed: matching runs in C (`re`), in CPython and in Pyodide alike. The BMP part of a class
compiles to a bitmap (O(1) per character); ranges above U+FFFF are tested one by one, so we
keep them out of the patterns (see `_ASTRAL`), and pure-ASCII text, most source code, gets a
pattern with ASCII-only classes (7x faster than the full classes on 5 MB of Python source).
"""
import re
from itertools import accumulate

from . import unicode_tables as T
from .errors import UnsupportedTokenizer

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _class_body(ranges, limit):
    """Ranges of code points, clipped to <= limit -> the inside of a `re` character class."""
    parts = []
    for lo, hi in ranges:
        if lo > limit:
            continue
        hi = min(hi, limit)
        parts.append("\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi))
    return "".join(parts)


def _contractions_ci():
    words = ("s", "t", "re", "ve", "m", "ll", "d")
    alts = ["".join("[" + re.escape(T.CONTRACTION_FOLDS[ch]) + "]" for ch in w) for w in words]
    return "'(?:" + "|".join(alts) + ")"


def _python_pattern(name, limit):
    """Our `re` translation of a known pattern, valid for texts whose code points are all
    <= limit (the classes are clipped to that range; negated classes stay correct there)."""
    L = _class_body(T.LETTER_RANGES, limit)
    N = _class_body(T.NUMBER_RANGES, limit)
    S = _class_body(T.SPACE_RANGES, limit)
    if name == "gpt2":
        return (r"'s|'t|'re|'ve|'m|'ll|'d"
                f"| ?[{L}]+"
                f"| ?[{N}]+"
                f"| ?[^{S}{L}{N}]+"
                f"|[{S}]+(?![^{S}])"
                f"|[{S}]+")
    digits = {"qwen2": "", "llama3": "{1,3}"}[name]
    return (_contractions_ci()
            + f"|[^\\r\\n{L}{N}]?[{L}]+"
            + f"|[{N}]{digits}"
            + f"| ?[^{S}{L}{N}]+[\\r\\n]*"
            + f"|[{S}]*[\\r\\n]+"
            + f"|[{S}]+(?![^{S}])"
            + f"|[{S}]+")


KNOWN_PATTERNS = {GPT2_PATTERN: "gpt2", QWEN2_PATTERN: "qwen2", LLAMA3_PATTERN: "llama3"}

# Code points above U+FFFF are rare, and `re` checks class ranges beyond the BMP one by one
# (only the BMP part of a class becomes a bitmap), which made matching 4x slower. So we match
# on a "shadow" of the text in which each such character is replaced by a BMP stand-in of the
# same class: a letter by U+00AA, a number by U+00B2, anything else by U+00A7. None of them
# is a literal of any pattern and none is White_Space (no astral character is), so the shadow
# splits at the same places; both strings have the same length, so the pieces map back.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_ASTRAL_L = [r for r in T.LETTER_RANGES if r[1] > 0xFFFF]
_ASTRAL_N = [r for r in T.NUMBER_RANGES if r[1] > 0xFFFF]


def _in_ranges(c, ranges):
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        if ranges[mid][1] < c:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(ranges) and ranges[lo][0] <= c


def _stand_in(m):
    c = ord(m.group())
    if _in_ranges(c, _ASTRAL_L):
        return "\u00aa"
    if _in_ranges(c, _ASTRAL_N):
        return "\u00b2"
    return "\u00a7"


_COMPILED = {}


def splitter(pattern):
    """A function text -> list of pre-tokens for a known split pattern.

    Every known pattern matches any character (its branches cover letters, numbers,
    whitespace and the rest), so the pieces always concatenate back to the text.
    ASCII text (most source code) runs a pattern with ASCII-only classes, BMP text one with
    BMP classes, anything else the BMP pattern on the shadow described above.
    """
    fn = _COMPILED.get(pattern)
    if fn is not None:
        return fn
    name = KNOWN_PATTERNS.get(pattern)
    if name is None:
        raise UnsupportedTokenizer(
            "pre-tokenizer split pattern %r is not one we implement; known patterns: %s"
            % (pattern, ", ".join("%s %r" % (n, p) for p, n in KNOWN_PATTERNS.items())))
    ascii_findall = re.compile(_python_pattern(name, 0x7F)).findall
    bmp_findall = re.compile(_python_pattern(name, 0xFFFF)).findall
    astral_search = _ASTRAL.search
    astral_sub = _ASTRAL.sub

    def split(text):
        if text.isascii():
            return ascii_findall(text)
        if astral_search(text) is None:
            return bmp_findall(text)
        pieces = bmp_findall(astral_sub(_stand_in, text))
        ends = list(accumulate(map(len, pieces)))
        return list(map(text.__getitem__, map(slice, [0] + ends[:-1], ends)))

    _COMPILED[pattern] = split
    return split


PATTERNS_BY_NAME = {"gpt2": GPT2_PATTERN, "qwen2": QWEN2_PATTERN, "llama3": LLAMA3_PATTERN}


class PreTokenizer:
    """A parsed `pre_tokenizer` section: splits a text segment into pre-tokens (raw text).

    Supported: ByteLevel (with or without its GPT-2 regex, with or without add_prefix_space),
    Split(Regex(<known pattern>), behavior=Isolated, invert=false), and a Sequence of Splits
    ending in one ByteLevel. The ByteLevel byte->character mapping itself is applied later, per
    piece, by the BPE step (it is a per-character map, so it commutes with the splitting); that
    is why ByteLevel must come last.
    """

    def __init__(self, steps):
        # steps: list of ("split", findall) or ("prefix", None), applied in order to every piece
        self.steps = steps
        self.fast = steps[0][1] if len(steps) == 1 and steps[0][0] == "split" else None
        self.add_prefix_space = any(kind == "prefix" for kind, _ in steps)

    def split(self, text, continuation=False):
        """Pieces of one segment. `continuation`: the text continues an earlier segment (a
        streaming cut), so a ByteLevel prefix space must not be added to it as a whole."""
        if self.fast is not None:
            return self.fast(text)
        pieces = [text]
        whole = True
        for kind, fn in self.steps:
            if kind == "split":
                out = []
                for p in pieces:
                    out.extend(fn(p))
                pieces = out
                whole = False
            elif not (whole and continuation):
                # ByteLevel add_prefix_space: a space before every current piece that does not
                # start with one (NormalizedString.prepend does nothing on an empty string)
                pieces = [" " + p if p and p[0] != " " else p for p in pieces]
        return [p for p in pieces if p]

    @classmethod
    def from_config(cls, cfg):
        if cfg is None:
            raise UnsupportedTokenizer("pre_tokenizer is null: only byte-level BPE (a ByteLevel "
                                       "pre-tokenizer) is supported")
        items = cfg.get("pretokenizers") if cfg.get("type") == "Sequence" else [cfg]
        if not isinstance(items, list) or not items:
            raise UnsupportedTokenizer("pre_tokenizer Sequence without pretokenizers: %r" % (cfg,))
        steps = []
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            last = i == len(items) - 1
            if kind == "ByteLevel":
                if not last:
                    raise UnsupportedTokenizer(
                        "pre_tokenizer ByteLevel must be the last step of the Sequence")
                if item.get("add_prefix_space", True):
                    steps.append(("prefix", None))
                if item.get("use_regex", True):
                    steps.append(("split", splitter(GPT2_PATTERN)))
            elif kind == "Split":
                pat = item.get("pattern") or {}
                if "Regex" not in pat:
                    raise UnsupportedTokenizer(
                        "pre_tokenizer Split with pattern %r: only Regex patterns we know" % (pat,))
                behavior = item.get("behavior", "Isolated")
                if behavior != "Isolated" or item.get("invert", False):
                    raise UnsupportedTokenizer(
                        "pre_tokenizer Split behavior %r invert=%r: only Isolated, invert=false"
                        % (behavior, item.get("invert")))
                steps.append(("split", splitter(pat["Regex"])))
            else:
                raise UnsupportedTokenizer("pre_tokenizer type %r is not supported" % (kind,))
        if not items or items[-1].get("type") != "ByteLevel":
            raise UnsupportedTokenizer(
                "pre_tokenizer must end with ByteLevel: only byte-level BPE is supported")
        return cls(steps)


def to_config(name):
    """tokenizer.json `pre_tokenizer` for our trainer: 'gpt2' (ByteLevel with its regex, as
    GPT-2 and GPT-NeoX), or 'qwen2' / 'llama3' (Split + ByteLevel without regex)."""
    if name == "gpt2":
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                "use_regex": True}
    if name in ("qwen2", "llama3"):
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERNS_BY_NAME[name]},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]}
    raise ValueError("unknown pre-tokenizer %r (gpt2, qwen2 or llama3)" % (name,))
