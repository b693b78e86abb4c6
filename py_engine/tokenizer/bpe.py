"""The BPE model: a vocabulary, ranked merges, and the merge loop of the `tokenizers` library.

A word (one pre-token, already in byte-level characters) starts as one symbol per character.
Repeatedly, among all adjacent symbol pairs that have a merge, the pair with the lowest rank
(earliest line in `merges`) is replaced by the merged token; on equal rank the leftmost pair
goes first. The library does this with a priority queue of (rank, position) entries that may go
stale; an entry is applied only if the pair now at that position still merges into the same
token. When every merge produces a distinct token that check rejects every stale entry, and a
plain "find the minimum rank, merge it, update the two neighbouring pairs" loop gives the same
result. A file in which two different pairs merge into one token (e.g. "a bc" and "ab c"; the
library's own trainer can write such files) can make a stale entry fire early, so for those
files and for very long words we run a faithful copy of the queue algorithm (`_merge_queue`).

Pairs and merge results are packed into ints: key = left << shift | right and
value = rank << shift | new_id, so one dict lookup gives both, and comparing values compares
ranks (ranks are unique).
"""
import heapq

from .errors import TokenizerError

# Words longer than this (in symbols) use the O(n log n) queue instead of the O(n^2) scan.
_SCAN_MAX = 128


class BPE:
    def __init__(self, vocab, merges, unk_token=None, continuing_subword_prefix=None,
                 end_of_word_suffix=None, fuse_unk=False, byte_fallback=False,
                 ignore_merges=False):
        if not isinstance(vocab, dict):
            raise TokenizerError("BPE vocab must be an object {token: id}, got %s"
                                 % type(vocab).__name__)
        for tok, i in vocab.items():
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise TokenizerError("BPE vocab id for %r is %r, not a non-negative integer"
                                     % (tok, i))
        self.vocab = vocab
        self.vocab_r = {i: t for t, i in vocab.items()}
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.end_of_word_suffix = end_of_word_suffix
        self.fuse_unk = fuse_unk
        self.byte_fallback = byte_fallback
        self.ignore_merges = ignore_merges
        if unk_token is not None and unk_token not in vocab:
            # the library only fails once an unknown character shows up; we fail at load
            raise TokenizerError("BPE unk_token %r is not in the vocab" % (unk_token,))

        max_id = max(vocab.values(), default=0)
        self.shift = max(max_id.bit_length(), 1)
        self.mask = (1 << self.shift) - 1
        self.inf = (len(merges) + 1) << self.shift  # above any packed value
        sh = self.shift
        prefix_len = len(continuing_subword_prefix) if continuing_subword_prefix else 0
        table = {}
        targets = set()
        self.has_duplicate_targets = False
        for rank, pair in enumerate(merges):
            a, b = pair
            a_id = vocab.get(a)
            b_id = vocab.get(b)
            if a_id is None or b_id is None:
                raise TokenizerError("BPE merge %d (%r %r) names a token that is not in the vocab"
                                     % (rank, a, b))
            new = a + b[prefix_len:]
            new_id = vocab.get(new)
            if new_id is None:
                raise TokenizerError("BPE merge %d (%r %r) makes %r, which is not in the vocab"
                                     % (rank, a, b, new))
            table[a_id << sh | b_id] = rank << sh | new_id  # a repeated pair: the last wins
            if new_id in targets:
                self.has_duplicate_targets = True
            targets.add(new_id)
        self.merges = table
        self.simple = continuing_subword_prefix is None and end_of_word_suffix is None

    # ------------------------------------------------------------------ symbols
    def _symbols(self, word):
        """Initial symbol ids of a word, as the library's `merge_word` builds them: one per
        character, with the subword prefix / word suffix where configured; an unknown
        character becomes its <0xXX> byte tokens (byte_fallback) or the unk token (fused if
        fuse_unk), or is dropped when the model has neither."""
        vocab = self.vocab
        if self.simple:
            ids = [vocab.get(ch) for ch in word]
            if None not in ids:
                return ids
        out = []
        unk = None  # pending unk: fused runs collapse to one
        last = len(word) - 1
        for i, ch in enumerate(word):
            s = ch
            if i and self.continuing_subword_prefix is not None:
                s = self.continuing_subword_prefix + s
            if i == last and self.end_of_word_suffix is not None:
                s = s + self.end_of_word_suffix
            tid = vocab.get(s)
            if tid is not None:
                if unk is not None:
                    out.append(unk)
                    unk = None
                out.append(tid)
                continue
            if self.byte_fallback:
                codes = [vocab.get("<0x%02X>" % b) for b in s.encode("utf-8")]
                if None not in codes:
                    out.extend(codes)
                    continue
            if self.unk_token is not None:
                unk_id = vocab[self.unk_token]
                if unk is not None and not self.fuse_unk:
                    out.append(unk)
                unk = unk_id
        if unk is not None:
            out.append(unk)
        return out

    # ------------------------------------------------------------------ merging
    def _merge_scan(self, syms):
        get = self.merges.get
        sh = self.shift
        mask = self.mask
        inf = self.inf
        ranks = [get(a << sh | b, inf) for a, b in zip(syms, syms[1:])]
        while ranks:
            best = min(ranks)
            if best == inf:
                break
            i = ranks.index(best)  # leftmost of the lowest rank
            new = best & mask
            syms[i] = new
            del syms[i + 1]
            del ranks[i]
            if i:
                ranks[i - 1] = get(syms[i - 1] << sh | new, inf)
            if i < len(ranks):
                ranks[i] = get(new << sh | syms[i + 1], inf)
        return syms

    def _merge_queue(self, syms):
        """The library's `Word::merge_all` without dropout, step for step."""
        get = self.merges.get
        sh = self.shift
        mask = self.mask
        n = len(syms)
        c = list(syms)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            v = get(c[i] << sh | c[i + 1])
            if v is not None:
                heap.append((v >> sh, i, v & mask))
        heapq.heapify(heap)
        pop = heapq.heappop
        push = heapq.heappush
        while heap:
            _, pos, new = pop(heap)
            if not alive[pos]:
                continue
            right = nxt[pos]
            if right >= n:
                continue
            v = get(c[pos] << sh | c[right])
            if v is None or (v & mask) != new:  # stale entry
                continue
            c[pos] = new
            alive[right] = False
            after = nxt[right]
            nxt[pos] = after
            if after < n:
                prev[after] = pos
            before = prev[pos]
            if before >= 0:
                v = get(c[before] << sh | new)
                if v is not None:
                    push(heap, (v >> sh, before, v & mask))
            if after < n:
                v = get(new << sh | c[after])
                if v is not None:
                    push(heap, (v >> sh, pos, v & mask))
        return [c[i] for i in range(n) if alive[i]]

    def merge(self, syms):
        if len(syms) < 2:
            return syms
        if self.has_duplicate_targets or len(syms) > _SCAN_MAX:
            return self._merge_queue(syms)
        return self._merge_scan(syms)

    def tokenize(self, word):
        """Ids of one byte-level word (a pre-token after the byte->character mapping)."""
        if not word:
            return []
        if self.ignore_merges:
            tid = self.vocab.get(word)
            if tid is not None:
                return [tid]
        return self.merge(self._symbols(word))
