"""Held-out quality of a loaded model over a token stream: mean loss (nats/token), perplexity
and bits per byte, streamed through the parallel path (`model.forward` + cross-entropy) in
batches of windows.

Windows (the rule): the stream ids[0:N] is cut into windows of T tokens that start every
T - 1 tokens, window k = ids[k(T-1) : k(T-1) + T]; the last one is shorter when the stream
ends mid-window (it still holds >= 2 tokens). Each window runs from a zero state, and position
t of a window predicts the window's token t+1 (transformers' causal-LM shift). Consecutive
windows share one token, so every token but the first, ids[1..N-1], is scored exactly once,
with 1 to T-1 tokens of context: the rule of the pretrain windows (py_engine/train/data.py),
taken once, in order.

Bytes (the denominator of bits per byte): the UTF-8 bytes the scored tokens ids[1..N-1] stand
for, each token counted as the tokenizer decodes it (a byte-level token: its bytes; a special
token such as a document separator: 0). Byte-level tokenizer: N - 1. One UTF-8 file under a
byte-level BPE: the file's size minus the first token's bytes.
    loss = total nats / scored tokens, perplexity = exp(loss),
    bits_per_byte = total nats / ln 2 / bytes.

Use: ids, nbytes = prepare(texts, tokenizer); ev = Evaluator(model, ids, T); then
`await ev.advance()` until `ev.done` (each call scores batches for about a second and returns
its progress), then ev.result(nbytes). Pure stdlib: runs in Pyodide and in CPython.
"""
import math
import struct
import time
from array import array

from py_engine.autograd.functional import Ctx, cross_entropy
from py_engine.gpu.tensor import Tensor
from py_engine.train.data import encode_corpus
from py_engine.train.trainer import IGNORE

DEFAULT_SEQ_LEN = 1024
# One batch's activations grow with its rows (Bsz * T) and its logits with rows * vocab: keep
# both modest so a batch fits the default 128-256 MiB bindings of any adapter.
MAX_ROWS = 4096
MAX_LOGITS_BYTES = 256 * 2**20


# --- the token stream and its bytes ---------------------------------------------------------

def prepare(texts, tokenizer, max_tokens=None, progress=None):
    """(ids array 'I', bytes of the scored tokens) of `texts` (documents joined as pretrain
    joins them), cut to the first `max_tokens` tokens when given. progress(done, total chars)."""
    ids = encode_corpus(texts, tokenizer, progress)
    if max_tokens is not None:
        if max_tokens < 2:
            raise ValueError(f"max tokens is {max_tokens}: scoring needs at least 2 tokens "
                             "(one to predict from, one to predict)")
        del ids[max_tokens:]
    if len(ids) < 2:
        raise ValueError(f"the corpus is {len(ids)} token long: scoring needs at least 2 "
                         "tokens; give a longer text")
    return ids, scored_bytes(ids, tokenizer)


def token_byte_lengths(tokenizer):
    """[bytes of token id] for every id of `tokenizer`, as it decodes them one by one (special
    tokens 0), or None when every id is one byte (the byte-level tokenizer)."""
    tok = getattr(tokenizer, "tok", tokenizer)        # data.BPETokenizer wraps a Tokenizer
    if not hasattr(tok, "id_to_token"):
        return None                                   # data.ByteTokenizer: id = byte
    from py_engine.tokenizer.bytelevel import token_bytes
    specials = set(tok.special_tokens)
    out = []
    for i in range(tok.vocab_size):
        t = tok.id_to_token(i)
        out.append(0 if t is None or t in specials else len(token_bytes(t)))
    return out


def scored_bytes(ids, tokenizer):
    """UTF-8 bytes that ids[1:] stand for (the module docstring's rule)."""
    lengths = token_byte_lengths(tokenizer)
    if lengths is None:
        return len(ids) - 1
    n = len(lengths)
    return sum(lengths[i] if i < n else 0 for i in ids[1:])


def summary(nats, tokens, nbytes):
    """{loss, perplexity, bits_per_byte, tokens, bytes} of a scored stream."""
    loss = nats / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_byte": nats / math.log(2) / nbytes if nbytes else None,
            "tokens": tokens, "bytes": nbytes}


# --- windows and batches -------------------------------------------------------------------

def windows(n_tokens, seq_len):
    """[(start, length)] of the windows over a stream of n_tokens (the module docstring's
    rule); their scored tokens (length - 1 each) add up to n_tokens - 1."""
    T = int(seq_len)
    if T < 2:
        raise ValueError(f"sequence length {T}: a window needs at least 2 tokens")
    out = []
    start = 0
    while start < n_tokens - 1:
        out.append((start, min(T, n_tokens - start)))
        start += T - 1
    return out


def default_batch_size(seq_len, vocab_size, max_binding):
    """Windows per batch: as many as keep rows <= MAX_ROWS and one batch's logits within both
    MAX_LOGITS_BYTES and the device's binding limit; refuses a window whose logits alone do
    not fit one binding."""
    per_window = seq_len * vocab_size * 4
    if per_window > max_binding:
        fit = max_binding // (vocab_size * 4)
        raise ValueError(f"the logits of one {seq_len}-token window ({per_window / 2**20:.0f} "
                         f"MiB for a {vocab_size}-token vocabulary) exceed this GPU's "
                         f"{max_binding / 2**20:.0f} MiB binding limit: use windows of at most "
                         f"{fit} tokens (--seq-len)")
    return max(1, min(MAX_ROWS // seq_len, min(MAX_LOGITS_BYTES, max_binding) // per_window))


def batches(n_tokens, seq_len, batch_size):
    """[(first window start, windows, window length)]: the full windows in order, batch_size
    at a time, then the short last window (if any) alone."""
    out = []
    run = []
    for start, length in windows(n_tokens, seq_len):
        if run and (length != run[0][1] or len(run) == batch_size):
            out.append((run[0][0], len(run), run[0][1]))
            run = []
        run.append((start, length))
    if run:
        out.append((run[0][0], len(run), run[0][1]))
    return out


# --- the GPU loop ---------------------------------------------------------------------------

class Evaluator:
    """Scores `ids` (array 'I') with `model` batch by batch; owns the model (release() frees
    it). Sums are kept in Python floats: per batch the GPU gives the mean over its targets."""

    def __init__(self, model, ids, seq_len=DEFAULT_SEQ_LEN, batch_size=None, owns_model=True):
        V = model.cfg.vocab_size
        if len(ids) < 2:
            raise ValueError(f"{len(ids)} tokens: scoring needs at least 2")
        top = max(ids)
        if top >= V:
            raise ValueError(f"the tokenizer gives token id {top}, but the model's vocabulary "
                             f"has {V} ids: use the tokenizer this model was trained with")
        self.model, self.ids, self.T = model, ids, int(seq_len)
        self.owns_model = owns_model
        from py_engine.gpu.row_chunks import binding_limit
        limit = binding_limit(model.device)     # a test's Device.binding_cap included
        self.batch_size = int(batch_size) if batch_size else default_batch_size(self.T, V, limit)
        if self.batch_size < 1:
            raise ValueError(f"batch size {batch_size}: at least 1 window per batch")
        self.plan = batches(len(ids), self.T, self.batch_size)
        self.windows = sum(b for _, b, _ in self.plan)
        self.next = 0
        self.nats = 0.0
        self.tokens = 0
        self.seconds = 0.0

    @property
    def done(self):
        return self.next >= len(self.plan)

    async def score_batch(self, start, Bsz, Tw):
        """(nats, targets) of `Bsz` windows of `Tw` tokens, the first starting at `start`."""
        rows, targets = array("I"), array("i")
        for b in range(Bsz):
            s = start + b * (self.T - 1)
            win = self.ids[s:s + Tw]
            rows.extend(win)
            targets.frombytes(win[1:].tobytes())   # ids < 2**31: same bits as i32
            targets.append(IGNORE)      # the last position has no next token in its window
        dev = self.model.device
        ids_t = Tensor.from_bytes(dev, (Bsz * Tw,), rows.tobytes(), "u32")
        tgt_t = Tensor.from_bytes(dev, (Bsz * Tw,), targets.tobytes(), "i32")
        batch = dev.batch(stream=True)
        ctx = Ctx(batch)
        logits = self.model.forward(ctx, ids_t, Bsz)                  # [Bsz*Tw, V]
        loss = cross_entropy(ctx, logits, tgt_t)                      # (mean, n_valid)
        batch.submit()
        try:
            mean, n = struct.unpack("<2f", await loss.to_bytes())
        finally:
            for t in (loss, logits, ids_t, tgt_t):
                t.release()
        if int(n) != Bsz * (Tw - 1):
            raise RuntimeError(f"cross-entropy counted {n} targets for {Bsz} windows of {Tw}")
        return mean * n, int(n)

    async def advance(self, max_seconds=1.0):
        """Score batches for about `max_seconds` (at least one); returns progress()."""
        t0 = time.perf_counter()
        while not self.done:
            start, Bsz, Tw = self.plan[self.next]
            nats, n = await self.score_batch(start, Bsz, Tw)
            self.nats += nats
            self.tokens += n
            self.next += 1
            if time.perf_counter() - t0 >= max_seconds:
                break
        self.seconds += time.perf_counter() - t0
        return self.progress()

    def progress(self):
        return {"tokens": self.tokens, "total_tokens": len(self.ids) - 1,
                "batches": self.next, "total_batches": len(self.plan),
                "loss": self.nats / self.tokens if self.tokens else None,
                "tokens_per_s": self.tokens / self.seconds if self.seconds else None,
                "done": self.done}

    def describe(self):
        return {"seq_len": self.T, "batch_size": self.batch_size, "windows": self.windows,
                "batches": len(self.plan), "total_tokens": len(self.ids) - 1,
                "vocab_size": self.model.cfg.vocab_size}

    def result(self, nbytes):
        if not self.done:
            raise RuntimeError(f"evaluation stopped after {self.next} of {len(self.plan)} batches")
        out = summary(self.nats, self.tokens, nbytes)
        out.update(seq_len=self.T, windows=self.windows, seconds=self.seconds)
        return out

    def release(self):
        if self.owns_model and self.model is not None:
            self.model.release()
        self.model = None


current = None     # the evaluator the CLI's snippets drive (one per engine)
