"""Training a byte-level BPE from text (pretraining from scratch, in the browser or on the host).

1. Pre-tokenize every text with the same pipeline encoding uses (special tokens split out,
   optional NFC, GPT-2 / Qwen2 / Llama-3 split pattern) and count the distinct pre-tokens.
2. Each distinct pre-token becomes a word of byte symbols (ids: special tokens first, then the
   256 byte-level characters in byte order), weighted by its count.
3. Repeat until the vocabulary is full: take the most frequent adjacent pair (ties: smallest
   left id, then smallest right id, so runs are deterministic), add the merged token, rewrite
   the words that contain the pair, and update the pair counts of those words only.

Cost: the counts live in a dict {pair: count} and an index {pair: words containing it}; the
best pair comes from a heap whose stale entries (count changed since pushed) are re-pushed with
the current count when popped. One merge costs time proportional to the words it touches, not
to the corpus, which keeps a few hundred KB of text to seconds in CPython.

The ranks we write are the merge order, so the `tokenizers` library and `Tokenizer` apply them
identically; our tie-breaking differs from the library's trainer, which is fine: the file, not
the trainer, defines the encoding. When a merge produces a string that is already a token
(as "a bc" after "ab c") the id is reused and both merges are kept, as the library does.
"""
import heapq
from collections import Counter, defaultdict

from .bytelevel import BYTE_TO_CHAR
from .pretokenize import to_config as pre_tokenizer_config


def _skeleton(vocab, merges, special_tokens, pre_tokenizer, normalizer):
    if normalizer not in (None, "NFC"):
        raise ValueError("normalizer must be None or 'NFC', not %r" % (normalizer,))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, s in enumerate(special_tokens)],
        "normalizer": {"type": "NFC"} if normalizer == "NFC" else None,
        "pre_tokenizer": pre_tokenizer_config(pre_tokenizer),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges]},
    }


def train_bpe(texts, vocab_size, special_tokens=(), pre_tokenizer="gpt2", normalizer=None,
              min_frequency=2):
    """Learn merges from `texts` (an iterable of str); returns a tokenizer.json dict.

    vocab_size counts the special tokens and the 256 byte tokens; training stops earlier when
    no pair occurs `min_frequency` times.
    """
    from .tokenizer import Tokenizer

    special_tokens = list(dict.fromkeys(special_tokens))
    k = len(special_tokens)
    if vocab_size < k + 256:
        raise ValueError("vocab_size %d is below %d special tokens + 256 byte tokens"
                         % (vocab_size, k))
    tokens = list(special_tokens) + [BYTE_TO_CHAR[b] for b in range(256)]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("a special token equals a byte-level character: %r" % (special_tokens,))

    # 1. pre-token counts, with the very pipeline that will encode
    pipeline = Tokenizer(_skeleton(dict(vocab), [], special_tokens, pre_tokenizer, normalizer))
    counts = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError("training texts must be str, not %s" % type(text).__name__)
        counts.update(pipeline._pieces(text))
    # 2. words of byte ids (added-token ids, the ints among the pieces, are not words)
    words = []
    freqs = []
    for piece, n in counts.items():
        if type(piece) is str:
            w = [k + b for b in piece.encode("utf-8")]
            if len(w) > 1:
                words.append(w)
                freqs.append(n)
    del counts

    pair_counts = defaultdict(int)
    where = defaultdict(set)
    for i, w in enumerate(words):
        f = freqs[i]
        for p in zip(w, w[1:]):
            pair_counts[p] += f
            where[p].add(i)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    # 3. merges
    merges = []
    while len(tokens) < vocab_size and heap:
        negc, a, b = heapq.heappop(heap)
        pair = (a, b)
        c = pair_counts.get(pair, 0)
        if c != -negc:  # stale: the count changed since this entry was pushed
            if c > 0:
                heapq.heappush(heap, (-c, a, b))
            continue
        if c < min_frequency:
            break
        merged = tokens[a] + tokens[b]
        new = vocab.get(merged)
        if new is None:
            new = len(tokens)
            tokens.append(merged)
            vocab[merged] = new
        merges.append((tokens[a], tokens[b]))

        touched = set()
        for i in where.pop(pair, ()):
            w = words[i]
            n = len(w)
            out = []
            j = 0
            hit = False
            while j < n:
                if j + 1 < n and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                    hit = True
                else:
                    out.append(w[j])
                    j += 1
            if not hit:  # stale index entry: an earlier merge already consumed the pair
                continue
            f = freqs[i]
            for p in zip(w, w[1:]):
                pair_counts[p] -= f
            for p in zip(out, out[1:]):
                pair_counts[p] += f
                where[p].add(i)
                touched.add(p)
            words[i] = out
        pair_counts.pop(pair, None)
        for p in touched:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))

    return _skeleton(vocab, merges, special_tokens, pre_tokenizer, normalizer)
