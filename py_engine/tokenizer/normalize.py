"""The `normalizer` section: NFC exactly as the `tokenizers` library applies it.

`tokenizers` normalizes with the `unicode-normalization-alignments` crate, whose Unicode tables
are old (older than Unicode 11: it does not know U+07FD NKO DANTAYALAN). Python's
`unicodedata` is newer (3.11: Unicode 14; Pyodide's 3.14: Unicode 16), and knows combining marks and decompositions the crate does not, e.g. U+1AC1
COMBINING LEFT PARENTHESIS ABOVE LEFT (ccc 230, Unicode 14): Python reorders it against other
marks, the crate leaves it where it is. Normalization is stable for characters both know, so
the only differences come from characters the crate treats as plain, inert starters (combining
class 0, no decomposition, no composition). An inert starter cuts a string into independent
halves: nothing reorders across it and nothing composes across it, so

    crate_NFC(left + x + right) == NFC(left) + x + NFC(right)      for x inert in the crate.

`unicode_tables.NFC_OPAQUE_RANGES` lists the code points Unicode 16 normalizes but the crate
treats as inert (read off the library by tools/make_tokenizer_fixtures.py); we split around them
and let `unicodedata` do the rest. That gives the library's result on both Python versions.
"""
import re
import unicodedata

from . import unicode_tables as T
from .errors import UnsupportedTokenizer

_OPAQUE = None


def _opaque_re():
    global _OPAQUE
    if _OPAQUE is None:
        body = "".join("\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi)
                       for lo, hi in T.NFC_OPAQUE_RANGES)
        _OPAQUE = re.compile("([" + body + "]+)")
    return _OPAQUE


def _nfc_general(text):
    opaque = _opaque_re()
    if opaque.search(text) is None:
        return unicodedata.normalize("NFC", text)
    parts = opaque.split(text)  # even indices: normal text, odd: runs of inert characters
    return "".join(p if i & 1 else unicodedata.normalize("NFC", p) for i, p in enumerate(parts))


_NON_ASCII = re.compile("[^\x00-\x7f]+")


def nfc(text):
    """NFC of `text` as the tokenizers library computes it (see the module docstring).

    ASCII characters never compose with what precedes them and block everything before them,
    so only each run of non-ASCII characters, with the one ASCII character before it (an 'e'
    before U+0301 becomes 'é'), needs normalizing; `unicodedata` would otherwise look up every
    character of a mostly-ASCII text (70 ns each in CPython).
    """
    if text.isascii():
        return text
    out = []
    pos = 0
    for m in _NON_ASCII.finditer(text):
        a, b = m.span()
        if a > pos:
            a -= 1
            out.append(text[pos:a])
        out.append(_nfc_general(text[a:b]))
        pos = b
    out.append(text[pos:])
    return "".join(out)


def identity(text):
    return text


def from_config(cfg):
    """The normalizer function for a tokenizer.json `normalizer` section (None, NFC, or a
    Sequence of those). Anything else is refused by name."""
    if cfg is None:
        return identity, None
    kind = cfg.get("type")
    if kind == "NFC":
        return nfc, "NFC"
    if kind == "Sequence":
        fns = []
        for item in cfg.get("normalizers", []):
            fn, name = from_config(item)
            if name is not None:
                fns.append(name)
        if not fns:
            return identity, None
        if all(n == "NFC" for n in fns):  # NFC is idempotent
            return nfc, "NFC"
    what = kind if kind != "Sequence" else cfg
    raise UnsupportedTokenizer("normalizer %r is not supported (only NFC, or none)" % (what,))
