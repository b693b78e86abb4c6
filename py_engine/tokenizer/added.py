"""Added tokens (`added_tokens` in tokenizer.json): found in the text before anything else.

As in the `tokenizers` library:
1. tokens with `normalized: false` (special tokens usually) are matched in the raw text;
2. each remaining piece is normalized, then tokens with `normalized: true` (e.g. GPT-NeoX's
   runs of spaces) are matched in it, against their normalized content;
3. what remains goes to the pre-tokenizer and the model.
Matching is leftmost-longest (an Aho-Corasick automaton with MatchKind::LeftmostLongest in the
library). We compile the token set into a `re` trie in which every node tries its children
before ending, so at the leftmost position where any token starts the longest one wins.
`single_word` keeps a match only between non-word characters, `lstrip` / `rstrip` make the
match swallow the whitespace on that side.
"""
import re

from .errors import TokenizerError

# Rust `char::is_whitespace` / regex `\s` = White_Space (what lstrip/rstrip strip)
_WS = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
       "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_LEADING_WS = re.compile("[%s]*" % re.escape(_WS))
# Rust regex `\w` (Unicode) is close to Python's `\w`; they differ on a few marks/connectors.
_WORD = re.compile(r"\w")


def _trailing_ws_start(text, end):
    i = end
    while i > 0 and text[i - 1] in _WS:
        i -= 1
    return i


def trie_regex(strings):
    """A regex matching the longest of `strings` at the leftmost position where one starts.

    Each trie node tries its children before ending (greedy optional group), so the match at a
    position is the longest token there. A family of runs of one character with contiguous
    lengths (GPT-NeoX's 2..24 spaces) becomes `c{lo,hi}` instead of 23 nested groups, which
    `re` runs several times faster; that is only done when no other token starts with `c`,
    so the alternation never has to choose between two matches at one position.
    """
    strings = sorted(set(s for s in strings if s))
    runs = {}
    for s in strings:
        if s == s[0] * len(s):
            runs.setdefault(s[0], []).append(len(s))
    alts = []
    rest = []
    for s in strings:
        c = s[0]
        lengths = runs.get(c)
        family = (lengths is not None and len(lengths) > 1
                  and all(t[0] != c or t == c * len(t) for t in strings)
                  and max(lengths) - min(lengths) + 1 == len(lengths))
        if family:
            if s == c * min(lengths):
                alts.append("%s{%d,%d}" % (re.escape(c), min(lengths), max(lengths)))
        else:
            rest.append(s)
    root = {}
    for s in rest:
        node = root
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node):
        subs = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not subs:
            return ""
        body = subs[0] if len(subs) == 1 else "(?:" + "|".join(subs) + ")"
        return "(?:" + body + ")?" if "" in node else body

    if root:
        alts.append(build(root))
    return re.compile("|".join(alts), re.DOTALL)


class AddedToken:
    __slots__ = ("id", "content", "single_word", "lstrip", "rstrip", "normalized", "special")

    def __init__(self, id, content, single_word=False, lstrip=False, rstrip=False,
                 normalized=True, special=False):
        self.id = id
        self.content = content
        self.single_word = single_word
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.special = special

    @classmethod
    def from_config(cls, item):
        try:
            tid = item["id"]
            content = item["content"]
        except (KeyError, TypeError):
            raise TokenizerError("added_tokens entry %r lacks 'id' or 'content'" % (item,))
        if not isinstance(tid, int) or tid < 0 or not isinstance(content, str):
            raise TokenizerError("added_tokens entry %r: bad id or content" % (item,))
        special = bool(item.get("special", False))
        return cls(tid, content, bool(item.get("single_word", False)),
                   bool(item.get("lstrip", False)), bool(item.get("rstrip", False)),
                   bool(item.get("normalized", not special)), special)

    def to_config(self):
        return {"id": self.id, "content": self.content, "single_word": self.single_word,
                "lstrip": self.lstrip, "rstrip": self.rstrip, "normalized": self.normalized,
                "special": self.special}


class _Matcher:
    """One leftmost-longest matcher over a set of tokens (raw or normalized)."""

    def __init__(self, pairs):
        # pairs: (pattern string, AddedToken) in the library's order; a duplicate pattern
        # keeps the first token (Aho-Corasick reports the lowest pattern index)
        self.by_pattern = {}
        for pat, tok in pairs:
            if pat:
                self.by_pattern.setdefault(pat, tok)
        self.regex = trie_regex(self.by_pattern) if self.by_pattern else None
        self.max_len = max(map(len, self.by_pattern), default=0)
        self.plain = all(not (t.single_word or t.lstrip or t.rstrip)
                         for t in self.by_pattern.values())
        self._ids = {p: t.id for p, t in self.by_pattern.items()}
        if self.regex is not None:
            self._split = re.compile("(" + self.regex.pattern + ")", re.DOTALL).split

    def spans(self, text):
        """[(start, stop, token)] as the library's `find_matches` computes them."""
        out = []
        if self.regex is None or not text:
            return out
        start_offset = 0
        by_pattern = self.by_pattern
        for m in self.regex.finditer(text):
            start, stop = m.span()
            tok = by_pattern[m.group()]
            if tok.single_word:
                start_space = start == 0 or not _WORD.match(text, start - 1, start)
                stop_space = stop == len(text) or not _WORD.match(text, stop)
                if not (start_space and stop_space):
                    continue
            if tok.lstrip:
                start = max(_trailing_ws_start(text, start), start_offset)
            if tok.rstrip:
                stop = _LEADING_WS.match(text, stop).end()
            out.append((start, stop, tok))
            start_offset = stop
        return out

    def split(self, text):
        """[(piece, token or None)] covering `text`."""
        spans = self.spans(text)
        if not spans:
            return [(text, None)]
        out = []
        pos = 0
        for start, stop, tok in spans:
            if pos < start:
                out.append((text[pos:start], None))
            out.append((text[start:stop], tok))
            pos = stop
        if pos != len(text):
            out.append((text[pos:], None))
        return out

    def parts(self, text):
        """`text` as a list alternating text and token ids: [str, id, str, id, ..., str]
        (strings may be empty). Without single_word/lstrip/rstrip tokens this is one C-level
        `re.split`."""
        if self.plain:
            parts = self._split(text)
            if len(parts) > 1:
                parts[1::2] = map(self._ids.__getitem__, parts[1::2])
            return parts
        out = []
        pos = 0
        for start, stop, tok in self.spans(text):
            out.append(text[pos:start] if pos < start else "")
            out.append(tok.id)
            pos = stop
        out.append(text[pos:])
        return out


class AddedVocabulary:
    """The library's AddedVocabulary, built the way it loads a tokenizer.json.

    The library does not take the ids written in `added_tokens`: it re-adds the tokens in
    file order and a token gets the id of the same content in the model vocab (or among the
    tokens already added), else the next free id after the model vocab / the added tokens. For
    files the library wrote itself both agree; for hand-edited ones we follow the library (it
    only logs a warning), since the ids it computes are the ones a model was trained with.
    """

    def __init__(self, tokens, model_vocab, normalizer):
        model_size = len(model_vocab)
        self.by_content = {}   # content -> id
        self.by_id = {}        # id -> AddedToken (with that id)
        special_list = []
        added_list = []
        special_contents = set()
        seen = set()  # _key of the tokens now in by_id: an identical token is ignored
        top = -1      # max(by_content.values())
        for tok in tokens:
            if tok.special and tok.content and tok.content not in special_contents:
                special_list.append(tok)
                special_contents.add(tok.content)
            key = _key(tok)
            if not tok.content or key in seen:
                continue
            tid = self.by_content.get(tok.content)
            if tid is None:
                tid = model_vocab.get(tok.content)
            if tid is None:
                if self.by_content:
                    tid = top + 1 if (top >= model_size or model_size == 0) else model_size
                else:
                    tid = model_size
            self.by_content[tok.content] = tid
            top = max(top, tid)
            if tid in self.by_id:
                seen.discard(_key(self.by_id[tid]))
            seen.add(key)
            self.by_id[tid] = AddedToken(tid, tok.content, tok.single_word, tok.lstrip,
                                         tok.rstrip, tok.normalized, tok.special)
            if tok.content not in special_contents:
                added_list.append(tok)
        self.special_contents = special_contents
        self.tokens = list(self.by_id.values())
        # matching: special tokens first, then the others; flags of the token now at that id
        ordered = special_list + added_list
        final = lambda t: self.by_id[self.by_content[t.content]]
        self.raw = _Matcher([(t.content, final(t)) for t in ordered if not t.normalized])
        self.normalized = _Matcher([(normalizer(t.content), final(t))
                                    for t in ordered if t.normalized])

    def __len__(self):
        return len(self.by_content)


def _key(t):
    return (t.content, t.single_word, t.lstrip, t.rstrip, t.normalized, t.special)
