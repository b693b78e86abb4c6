"""Corpus -> token ids -> a fixed-seed order of training windows, with a resumable position.

Tokenizers: a py_engine.tokenizer.Tokenizer, or byte-level (ids = UTF-8 bytes, vocab 256)
when none is chosen. The byte-level tokenizer is also written out as a tokenizer.json
(BYTE_LEVEL_TOKENIZER) that HF `tokenizers` and our Tokenizer load with exactly these ids, so
a model trained here always ships a tokenizer.

Windows: the token stream (documents joined by a separator) is cut into windows of T tokens
that start every T - 1 tokens, so every adjacent pair (t, t+1) is a training target exactly
once per epoch (position t predicts t+1 inside a window; the last position has none). Each
epoch visits every window once in an order drawn from (seed, epoch) by our own generator
(splitmix64 + Fisher-Yates), so the order is the same in every Python and browser. The
position (epoch, index) is all a resumed run needs to continue the same sequence.

Pure stdlib: this module is imported inside Pyodide.
"""
import json
import zlib
from array import array

MASK64 = (1 << 64) - 1


# --- byte-level tokenizer -----------------------------------------------------------------

def _bytes_to_unicode():
    """GPT-2's byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def byte_level_tokenizer_config():
    """A tokenizer.json (dict) whose ids are exactly the UTF-8 bytes: a byte-level BPE with
    the 256 byte characters as its vocabulary (id = byte value) and no merges."""
    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
          "use_regex": False}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": dict(bl), "post_processor": dict(bl),
            "decoder": dict(bl),
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": []}}


class ByteTokenizer:
    """ids = UTF-8 bytes. Same interface as the parts of Tokenizer the trainer uses."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text, add_special_tokens=False):
        return array("B", text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")

    def to_json(self, indent=None):
        return json.dumps(byte_level_tokenizer_config(), ensure_ascii=False, indent=indent)

    @property
    def eos_id(self):
        return None


class BPETokenizer:
    """A py_engine.tokenizer.Tokenizer wrapped with what the trainer needs."""

    kind = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.vocab_size

    def encode(self, text, add_special_tokens=False):
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def to_json(self, indent=None):
        return self.tok.to_json(indent=indent)

    @property
    def eos_id(self):
        for name in ("<|endoftext|>", "</s>", "<eos>"):
            tid = self.tok.token_to_id(name)
            if tid is not None:
                return tid
        return None


def tokenizer_from_json(text, where="tokenizer.json"):
    """Load a tokenizer.json text; a plain ValueError names the file and the problem."""
    try:
        from py_engine.tokenizer import Tokenizer, TokenizerError
    except ImportError as e:   # pragma: no cover - the tokenizer package is missing
        raise ValueError(f"{where}: the tokenizer module is not available ({e})") from None
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where} is not valid JSON ({e}); choose a HuggingFace "
                         "tokenizer.json file or the byte-level tokenizer") from None
    if cfg == byte_level_tokenizer_config() or _is_byte_level(cfg):
        return ByteTokenizer()
    try:
        return BPETokenizer(Tokenizer.from_config(cfg))
    except (TokenizerError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where} cannot be used: {e}. Choose a byte-level BPE "
                         "tokenizer.json (GPT-2 / GPT-NeoX / Qwen2 style), or the "
                         "byte-level tokenizer") from None


def _is_byte_level(cfg):
    try:
        model = cfg["model"]
        return (not model.get("merges") and not cfg.get("added_tokens")
                and model.get("vocab") == byte_level_tokenizer_config()["model"]["vocab"])
    except (KeyError, TypeError, AttributeError):
        return False


def train_bpe(texts, vocab_size, special_tokens=("<|endoftext|>",)):
    """Train a byte-level BPE on `texts` with the tokenizer package's trainer."""
    try:
        from py_engine.tokenizer import Tokenizer
        tok = Tokenizer.train(iter(texts), vocab_size=vocab_size,
                              special_tokens=list(special_tokens))
    except ImportError as e:
        raise ValueError(f"training a BPE tokenizer is not available in this build ({e}); "
                         "use the byte-level tokenizer or load a tokenizer.json") from None
    return BPETokenizer(tok)


# --- corpus -------------------------------------------------------------------------------

# A file with more than this share of invalid UTF-8 bytes is not text in an encoding we read
# (Latin-1, UTF-16, a binary format): training on its U+FFFD replacement characters would teach
# the model noise. Below it, the few bad bytes are replaced and the file is kept (said so).
MAX_INVALID_UTF8_SHARE = 0.01


def corpus_file_text(name, raw):
    """(text or None, note or None) for one corpus file's bytes: None with the reason when
    it is skipped (binary, or not UTF-8), a note when it is kept with bad bytes replaced."""
    raw = bytes(raw)
    if not raw:
        return None, f"{name}: empty"
    nul = raw.find(b"\0", 0, 1 << 16)
    if nul >= 0:
        return None, f"{name}: binary (a NUL byte at offset {nul})"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        first = e.start
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    if bad > MAX_INVALID_UTF8_SHARE * len(raw):
        return None, (f"{name}: not UTF-8 text ({bad:,} invalid UTF-8 sequences, the first at "
                      f"byte {first}; save it as UTF-8)")
    return text, (f"{name}: {bad:,} invalid UTF-8 sequence(s) replaced with U+FFFD (the first "
                  f"at byte {first})")


def corpus_from_files(files):
    """(texts, info) from [(name, bytes)]: what is kept, what was skipped and why.

    info: {"files", "chars", "names", "skipped": ["name: why", ...], "notes": [...]} (lists
    cut at 20). Raises ValueError naming the skipped files when nothing usable is left."""
    texts, names, skipped, notes = [], [], [], []
    for name, raw in files:
        text, why = corpus_file_text(name, raw)
        if text is None:
            skipped.append(why)
            continue
        if why:
            notes.append(why)
        texts.append(text)
        names.append(name)
    if not texts:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5
                                          else "")
        raise ValueError("no usable text in the corpus" + (f" (skipped {shown})" if skipped
                                                            else "")
                         + ": choose UTF-8 text files (.txt, .md, .py, ...) or the sample corpus")
    return texts, {"files": len(texts), "chars": sum(map(len, texts)), "names": names[:20],
                   "skipped": skipped[:20], "skipped_count": len(skipped), "notes": notes[:20]}


def skipped_summary(info):
    """One line saying which corpus files were skipped and why, or "" when none were."""
    n = info.get("skipped_count", len(info.get("skipped", [])))
    if not n:
        return ""
    shown = info["skipped"][:5]
    return (f"skipped {n} corpus file{'s' if n > 1 else ''}: " + "; ".join(shown)
            + (f"; and {n - len(shown)} more" if n > len(shown) else ""))

def encode_corpus(texts, tokenizer, progress=None):
    """Token ids (array 'I') of documents `texts` joined by the tokenizer's end-of-text
    token (or a blank line when it has none). progress(done_chars, total_chars)."""
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("the corpus is empty: drop some text files (or a folder), or pick "
                         "the sample corpus")
    ids = array("I")
    total = sum(len(t) for t in texts)
    done = 0
    eos = tokenizer.eos_id
    sep = [eos] if eos is not None else list(tokenizer.encode("\n\n"))
    for k, text in enumerate(texts):
        if k:
            ids.extend(sep)
        # encode in blocks so progress can be reported on long documents
        step = 1 << 18
        start = 0
        while start < len(text):
            end = min(len(text), start + step)
            if end < len(text):   # cut after a newline so no token straddles the cut
                nl = text.rfind("\n", start, end)
                if nl > start:
                    end = nl + 1
            enc = tokenizer.encode(text[start:end])
            if isinstance(enc, array) and enc.typecode != "I":
                ids.frombytes(array("I", enc).tobytes())
            else:
                ids.extend(enc)
            done += end - start
            start = end
            if progress:
                progress(done, total)
    return ids


def ids_digest(ids):
    """(count, crc32) fingerprint of a token stream: a resumed run checks it's the same."""
    data = ids.tobytes() if isinstance(ids, array) else array("I", ids).tobytes()
    return [len(ids), zlib.crc32(data) & 0xFFFFFFFF]


def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def permutation(n, seed, epoch):
    """A permutation of range(n) from (seed, epoch): Fisher-Yates over splitmix64."""
    order = list(range(n))
    state = (seed * 0x100000001B3 + epoch * 0xD1342543DE82EF95 + 1) & MASK64
    for i in range(n - 1, 0, -1):
        state, r = _splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


class Batcher:
    """Fixed-seed batches of windows over `ids`.

    next_batch() -> flat ids [Bsz*T] (labels are the same ids: the trainer shifts them).
    position / restore(position): {"epoch", "index"} — where the next batch starts."""

    def __init__(self, ids, seq_len, batch_size, seed=0):
        self.ids = ids
        self.T = int(seq_len)
        self.Bsz = int(batch_size)
        self.seed = int(seed)
        if self.T < 2:
            raise ValueError("sequence length must be at least 2")
        if self.Bsz < 1:
            raise ValueError("batch size must be at least 1")
        if len(ids) < self.T:
            raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one sequence of "
                             f"{self.T}: add more text or lower the sequence length")
        stride = self.T - 1
        self.starts = list(range(0, len(ids) - self.T + 1, stride))
        self.epoch = 0
        self.index = 0
        self._order = None

    @property
    def windows(self):
        return len(self.starts)

    @property
    def tokens_per_batch(self):
        return self.Bsz * self.T

    def _epoch_order(self):
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, permutation(len(self.starts), self.seed, self.epoch))
        return self._order[1]

    def next_window(self):
        order = self._epoch_order()
        s = self.starts[order[self.index]]
        self.index += 1
        if self.index >= len(order):
            self.epoch += 1
            self.index = 0
        return s

    def next_batch(self):
        out = array("I")
        T = self.T
        for _ in range(self.Bsz):
            s = self.next_window()
            out.extend(self.ids[s:s + T])
        return out

    @property
    def position(self):
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position):
        epoch, index = int(position["epoch"]), int(position["index"])
        if not 0 <= index < max(1, len(self.starts)):
            raise ValueError(f"saved data position {position} is outside this corpus "
                             f"({len(self.starts)} windows): is it the same corpus?")
        self.epoch, self.index = epoch, index
