"""`Tokenizer`: loads an HF tokenizer.json (or GPT-2's vocab.json + merges.txt) and encodes,
decodes and streams exactly as the `tokenizers` library does for byte-level BPE models
(GPT-2, GPT-NeoX / Mamba, Qwen2, Llama-3).

Encoding one text, in the library's order:
  1. split out added tokens matched in the raw text (`normalized: false`, e.g. <|endoftext|>);
  2. normalize each remaining piece (NFC or nothing), split out `normalized: true` tokens;
  3. pre-tokenize each remaining piece (regex split, optional prefix space);
  4. each pre-token -> UTF-8 bytes -> byte-level characters -> BPE merges -> ids;
  5. the post-processor may add BOS/EOS (TemplateProcessing) when add_special_tokens.
Step 4 is memoized per pre-token (a bounded dict): in source code and prose most pre-tokens
repeat, so most of the text costs one regex match and one dict lookup per pre-token.
"""
import json
import os
import re
from itertools import chain, repeat

from . import normalize as _normalize
from .added import AddedToken, AddedVocabulary
from .bpe import BPE
from .bytelevel import to_bytelevel, token_bytes
from .errors import TokenizerError, UnsupportedTokenizer
from .pretokenize import PreTokenizer

_CACHE_CAPACITY = 100_000   # pre-tokens kept; the dict is emptied when full (5 MB of Python
                            # source has ~31k distinct pre-tokens)
_CACHE_MAX_PIECE = 256      # longer pre-tokens are not cached (like the library's MAX_LENGTH)

# Streaming cut points (see `_setup_streaming`): after a lone newline between printable ASCII
# characters, or between an ASCII letter/digit and ASCII punctuation other than the apostrophe.
_CUT = re.compile(r"[!-~]\n(?=[!-~])|[A-Za-z0-9](?=[!-&(-/:-@\[-`{-~])")


class _PieceCache(dict):
    """pre-token -> tuple of ids (and added-token id -> (id,)); computes on a miss
    (dict.__missing__), so a hit is one C-level dict lookup even when called through `map`."""
    __slots__ = ("compute",)

    def __missing__(self, piece):
        ids = self.compute(piece)
        if type(piece) is int or len(piece) <= _CACHE_MAX_PIECE:
            if len(self) >= _CACHE_CAPACITY:
                self.clear()
            self[piece] = ids
        return ids


def _load_json_text(text, where):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError("%s is not valid JSON (truncated or corrupt?): %s"
                             % (where, e)) from None
    if not isinstance(data, dict):
        raise TokenizerError("%s: expected a JSON object at the top level" % where)
    return data


def _parse_merges(merges, where):
    if not isinstance(merges, list):
        raise TokenizerError("%s: model.merges must be a list" % where)
    out = []
    for i, m in enumerate(merges):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            parts = None
        if not parts or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise TokenizerError("%s: merge %d is %r, expected 'a b' or [a, b]" % (where, i, m))
        out.append((parts[0], parts[1]))
    return out


class Tokenizer:
    """A byte-level BPE tokenizer. Build it with `from_file`, `from_str`, `from_config`,
    `from_vocab_merges` or `train`.

    The file's `truncation` and `padding` sections are ignored: the engine decides sequence
    lengths itself (the library would cut or pad every encoding).
    """

    def __init__(self, config, where="tokenizer.json"):
        if not isinstance(config, dict):
            raise TokenizerError("%s: expected a JSON object" % where)
        self._config = config
        model = config.get("model")
        if not isinstance(model, dict):
            raise TokenizerError("%s: no 'model' section" % where)
        mtype = model.get("type")
        if mtype is None and "merges" in model:
            mtype = "BPE"  # old files leave the type out
        if mtype != "BPE":
            raise UnsupportedTokenizer("%s: model type %r is not supported (only BPE)"
                                       % (where, mtype))
        if "vocab" not in model or "merges" not in model:
            raise TokenizerError("%s: BPE model without vocab or merges" % where)
        if model.get("dropout") not in (None, 0, 0.0):
            raise UnsupportedTokenizer("%s: BPE dropout %r is not supported (it makes encoding "
                                       "random)" % (where, model.get("dropout")))
        self._merges = _parse_merges(model["merges"], where)
        try:
            self.model = BPE(model["vocab"], self._merges, unk_token=model.get("unk_token"),
                             continuing_subword_prefix=model.get("continuing_subword_prefix"),
                             end_of_word_suffix=model.get("end_of_word_suffix"),
                             fuse_unk=bool(model.get("fuse_unk", False)),
                             byte_fallback=bool(model.get("byte_fallback", False)),
                             ignore_merges=bool(model.get("ignore_merges", False)))
        except TokenizerError as e:
            raise TokenizerError("%s: %s" % (where, e)) from None

        try:
            self._parse_sections(config, where)
        except TokenizerError as e:
            # the section parsers name the part; the file name is added once, here
            if str(e).startswith(where):
                raise
            raise type(e)("%s: %s" % (where, e)) from None

        self._cache = _PieceCache()
        bpe_tokenize = self.model.tokenize
        self._cache.compute = lambda piece: ((piece,) if type(piece) is int
                                             else tuple(bpe_tokenize(to_bytelevel(piece))))
        self._lookup = self._cache.__getitem__
        self._decode_tables = None
        self._setup_streaming()

    def _parse_sections(self, config, where):
        self._normalize, self.normalizer_name = _normalize.from_config(config.get("normalizer"))
        self._pre = PreTokenizer.from_config(config.get("pre_tokenizer"))
        self._decoder = self._parse_decoder(config.get("decoder"))
        post = self._parse_post_processor(config.get("post_processor"))
        self._prefix_ids, self._suffix_ids = post

        added = config.get("added_tokens") or []
        if not isinstance(added, list):
            raise TokenizerError("%s: added_tokens must be a list" % where)
        tokens = [AddedToken.from_config(item) for item in added]
        self.added = AddedVocabulary(tokens, self.model.vocab, self._normalize)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path):
        """`path`: a tokenizer.json, or a folder with tokenizer.json or vocab.json + merges.txt
        (tokenizer.json preferred)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            tj = os.path.join(path, "tokenizer.json")
            if os.path.exists(tj):
                return cls.from_file(tj)
            vocab = os.path.join(path, "vocab.json")
            merges = os.path.join(path, "merges.txt")
            if os.path.exists(vocab) and os.path.exists(merges):
                return cls.from_vocab_merges(vocab, merges)
            raise TokenizerError("%s has neither tokenizer.json nor vocab.json + merges.txt" % path)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError("%s is not UTF-8 text: %s" % (path, e)) from None
        return cls(_load_json_text(text, path), where=path)

    @classmethod
    def from_str(cls, text):
        return cls(_load_json_text(text, "tokenizer JSON"))

    @classmethod
    def from_config(cls, config):
        return cls(json.loads(json.dumps(config)))  # private copy

    @classmethod
    def from_vocab_merges(cls, vocab_path, merges_path):
        """GPT-2 style files: a byte-level BPE with the GPT-2 ByteLevel pre-tokenizer (no prefix
        space) and decoder, no normalizer; <|endoftext|> is special when the vocab has it."""
        with open(vocab_path, encoding="utf-8") as f:
            vocab = _load_json_text(f.read(), vocab_path)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline (Rust's lines() yields no empty last line)
        merges = []
        for i, line in enumerate(l.rstrip("\r") for l in lines):
            if line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise TokenizerError("%s: line %d is %r, expected two tokens separated by a space"
                                     % (merges_path, i + 1, line))
            merges.append(parts)
        added = []
        if "<|endoftext|>" in vocab:
            added.append({"id": vocab["<|endoftext|>"], "content": "<|endoftext|>",
                          "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True})
        bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}
        config = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                  "normalizer": None, "pre_tokenizer": dict(bl), "post_processor": dict(bl),
                  "decoder": dict(bl),
                  "model": {"type": "BPE", "dropout": None, "unk_token": None,
                            "continuing_subword_prefix": None, "end_of_word_suffix": None,
                            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                            "vocab": vocab, "merges": merges}}
        return cls(config, where=vocab_path)

    @classmethod
    def train(cls, corpus_iter, vocab_size, special_tokens=(), pre_tokenizer="gpt2",
              normalizer=None, min_frequency=2):
        """Learn a byte-level BPE from an iterable of texts; see `train.train_bpe`."""
        from .train import train_bpe
        return cls(train_bpe(corpus_iter, vocab_size, special_tokens, pre_tokenizer,
                             normalizer, min_frequency))

    @staticmethod
    def _parse_decoder(cfg):
        if cfg is None:
            return None
        kind = cfg.get("type")
        if kind == "Sequence" and len(cfg.get("decoders", [])) == 1:
            return Tokenizer._parse_decoder(cfg["decoders"][0])
        if kind == "ByteLevel":
            return "ByteLevel"
        raise UnsupportedTokenizer("decoder %r is not supported (only ByteLevel or none)" % (kind,))

    @staticmethod
    def _parse_post_processor(cfg):
        """(ids before the text, ids after) that add_special_tokens adds for one sequence."""
        if cfg is None:
            return [], []
        kind = cfg.get("type")
        if kind == "ByteLevel":  # only trims offsets
            return [], []
        if kind == "Sequence":
            before, after = [], []
            for item in cfg.get("processors", []):
                b, a = Tokenizer._parse_post_processor(item)
                before, after = before + b, after + a
            return before, after
        if kind == "TemplateProcessing":
            specials = cfg.get("special_tokens", {})
            before, after = [], []
            seen_a = False
            for item in cfg.get("single", []):
                if "Sequence" in item:
                    if item["Sequence"].get("id") != "A" or seen_a:
                        raise UnsupportedTokenizer("TemplateProcessing single %r"
                                                   % (cfg.get("single"),))
                    seen_a = True
                elif "SpecialToken" in item:
                    name = item["SpecialToken"].get("id")
                    if name not in specials:
                        raise TokenizerError("TemplateProcessing names special token %r that its "
                                             "special_tokens does not define" % (name,))
                    (after if seen_a else before).extend(specials[name]["ids"])
                else:
                    raise UnsupportedTokenizer("TemplateProcessing item %r" % (item,))
            return before, after
        raise UnsupportedTokenizer("post_processor %r is not supported (ByteLevel, "
                                   "TemplateProcessing or none)" % (kind,))

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self):
        """Number of ids (highest id + 1), counting added tokens: the embedding's row count."""
        top = max(self.model.vocab_r, default=-1)
        if self.added.by_id:
            top = max(top, max(self.added.by_id))
        return top + 1

    def get_vocab(self):
        vocab = dict(self.model.vocab)
        vocab.update(self.added.by_content)
        return vocab

    def token_to_id(self, token):
        tid = self.added.by_content.get(token)
        return tid if tid is not None else self.model.vocab.get(token)

    def id_to_token(self, tid):
        tok = self.added.by_id.get(tid)
        return tok.content if tok is not None else self.model.vocab_r.get(tid)

    @property
    def special_tokens(self):
        return sorted(self.added.special_contents, key=self.token_to_id)

    # ------------------------------------------------------------------ encoding
    def encode(self, text, add_special_tokens=True):
        """Ids of `text`. add_special_tokens: apply the post-processor's template (e.g.
        Llama-3's BOS); byte-level files without a template add nothing."""
        if not isinstance(text, str):
            raise TypeError("encode() takes a str, not %s" % type(text).__name__)
        out = list(self._prefix_ids) if add_special_tokens else []
        self._encode_into(text, out, False)
        if add_special_tokens:
            out.extend(self._suffix_ids)
        return out

    def _encode_into(self, text, out, continuation):
        # Collect every pre-token (str) and added-token id (int) in order, then look them all
        # up in one C-level pass: the cache maps an int to itself, a str to its BPE ids.
        out.extend(chain.from_iterable(map(self._lookup, self._pieces(text, continuation))))

    def _pieces(self, text, continuation=False):
        """Pre-tokens (str, raw text) and added-token ids (int) of `text`, in order."""
        pieces = []
        raw = self.added.raw
        norm = self.added.normalized
        normalize = self._normalize
        pre_split = self._pre.split
        segs = (text,) if raw.regex is None else raw.parts(text)
        for k, seg in enumerate(segs):
            if type(seg) is int:
                pieces.append(seg)
                continue
            if not seg:
                continue
            cont = continuation and k == 0
            seg = normalize(seg)
            if norm.regex is None:
                pieces += pre_split(seg, cont)
                continue
            for j, part in enumerate(norm.parts(seg)):
                if type(part) is int:
                    pieces.append(part)
                elif part:
                    pieces += pre_split(part, cont and j == 0)
        return pieces

    # ------------------------------------------------------------------ streaming
    def _setup_streaming(self):
        """Decide whether cutting a stream at `_CUT` positions is exact for this file.

        We encode text[:b] and text[b:] separately. That is exact when every split pattern
        ends a pre-token at b and the pre-tokens before b come out the same whether the text
        goes on or ends at b; the regex engine does look at b (`\\s+(?!\\S)` splits a run of
        whitespace differently before a word and at the end), so the cut rules are:
        * b right after a lone '\\n' with printable ASCII on both sides: the whitespace run is
          that one newline, a pre-token of its own (or the tail of a symbol run's [\\r\\n]*)
          whatever follows;
        * b between an ASCII letter/digit and ASCII punctuation (not the apostrophe of
          contractions): a letter or digit run ends at b whether punctuation or the end follows.
        NFC cannot compose or reorder across an ASCII starter. What is left are added tokens
        that could straddle b: raw ones are checked against their matches in the buffer;
        normalized ones (matched after NFC) must not contain a cut position at all.
        """
        self._stream_ok = True
        for tok in self.added.tokens:
            if tok.normalized:
                for m in _CUT.finditer(tok.content):
                    if 0 < m.end() < len(tok.content):
                        self._stream_ok = False
        if self._pre.add_prefix_space and self.added.normalized.regex is not None:
            self._stream_ok = False  # whether a cut starts a fresh segment is not known here

    def _stream_cut(self, buf):
        """Largest exact cut position in `buf`, or 0 (and whether it starts a fresh segment)."""
        if not self._stream_ok:
            return 0, False
        limit = len(buf) - self.added.raw.max_len - 2
        if limit <= 0:
            return 0, False
        spans = self.added.raw.spans(buf) if self.added.raw.regex is not None else []
        ends = {stop for _, stop, _ in spans}
        window = max(0, limit - 8192)
        while True:
            cands = [m.end() for m in _CUT.finditer(buf, window, limit + 1)]
            for b in reversed(cands):
                if not any(start < b < stop for start, stop, _ in spans):
                    return b, b in ends
            if window == 0:
                return 0, False
            window = 0

    def encode_batches(self, chunks, add_special_tokens=True, block_chars=1 << 16):
        """Encode a text given as an iterable of string chunks (cut anywhere, even inside a
        word); yields lists of ids whose concatenation equals encode("".join(chunks)).

        Memory stays bounded: text is cut at the last exact cut point (see `_setup_streaming`)
        once `block_chars` characters are buffered, and only the tail after it is kept. Text
        with no cut point (no newline, no ASCII punctuation) is buffered until one comes.
        """
        if add_special_tokens and self._prefix_ids:
            yield list(self._prefix_ids)
        buf = ""
        continuation = False
        for chunk in chunks:
            if not isinstance(chunk, str):
                raise TypeError("encode_stream() chunks must be str, not %s" % type(chunk).__name__)
            buf = buf + chunk if buf else chunk
            if len(buf) < block_chars:
                continue
            b, fresh = self._stream_cut(buf)
            if b <= 0:
                continue
            out = []
            self._encode_into(buf[:b], out, continuation)
            buf = buf[b:]
            continuation = not fresh
            yield out
        if buf:
            out = []
            self._encode_into(buf, out, continuation)
            yield out
        if add_special_tokens and self._suffix_ids:
            yield list(self._suffix_ids)

    def encode_stream(self, chunks, add_special_tokens=True, block_chars=1 << 16):
        """Like `encode_batches`, one id at a time."""
        for batch in self.encode_batches(chunks, add_special_tokens, block_chars):
            yield from batch

    # ------------------------------------------------------------------ decoding
    def _tables(self):
        if self._decode_tables is None:
            if self._decoder == "ByteLevel":
                conv = token_bytes
            else:
                conv = str  # joined with spaces below
            full = {i: conv(t) for i, t in self.model.vocab_r.items()}
            for tid, tok in self.added.by_id.items():
                full[tid] = conv(tok.content)
            specials = self.added.special_contents
            plain = {i: v for i, v in full.items() if self.id_to_token(i) not in specials}
            self._decode_tables = (full, plain)
        return self._decode_tables

    def decode(self, ids, skip_special_tokens=True):
        """Text of `ids`; unknown ids are skipped, special tokens too unless asked otherwise
        (the library's defaults). Byte sequences that are not UTF-8 become U+FFFD."""
        full, plain = self._tables()
        table = plain if skip_special_tokens else full
        if self._decoder == "ByteLevel":
            return b"".join(map(table.get, ids, repeat(b""))).decode("utf-8", "replace")
        return " ".join(t for t in map(table.get, ids) if t is not None)

    # ------------------------------------------------------------------ saving
    def to_config(self):
        return json.loads(json.dumps(self._config))

    def to_json(self, indent=None):
        return json.dumps(self._config, ensure_ascii=False, indent=indent)

    def save(self, path, indent=None):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent))

    def __repr__(self):
        return "Tokenizer(vocab_size=%d, merges=%d, added=%d, normalizer=%s)" % (
            self.vocab_size, len(self._merges), len(self.added), self.normalizer_name)
