"""The tab's data rules on PyTorch: same tokenizer, same corpus encoding, same window order.

Corpus: `mambaweb pretrain`'s reader (a file, or a folder's text files sorted by path) ->
py_engine.train.data.encode_corpus with the model's tokenizer.json -> Batcher(seq_len, batch,
seed). So optimizer step s (with K = grad_accum micro-batches) consumes the tab's micro-batches
K*s .. K*s+K-1, each `batch` windows of seq_len tokens.

Distributed rule (documented in the CLI help): `--batch B` is the GLOBAL micro-batch, B
sequences, exactly the tab's batch. Every rank draws the same global micro-batch from the same
Batcher and takes rows [r*B/W, (r+1)*B/W) of it (W processes, B % W == 0). Each rank's loss is
the mean over its rows' B/W*(T-1) targets; all windows are full, so the mean of the W rank
means is the mean over all B*(T-1) targets, and DDP's averaged gradient is the gradient of the
global mean: K processes on a global batch of B give the update one process gives on B.
"""
from array import array

from py_engine.train import data as tab_data


def encode(texts, tokenizer_json, vocab_size, where):
    """(tokenizer, ids array 'I') of the corpus, checked against the model's vocabulary."""
    tok = tab_data.tokenizer_from_json(tokenizer_json, where)
    if tok.vocab_size > vocab_size:
        raise ValueError(f"{where} has {tok.vocab_size} tokens but the model's vocab_size is "
                         f"{vocab_size}: this is not the tokenizer the model was trained with")
    ids = tab_data.encode_corpus(texts, tok)
    return tok, ids


class RankBatches:
    """This rank's rows of the tab's global micro-batches.

    next() -> LongTensor [B/W, T] on `device`; position/restore as the tab's Batcher."""

    def __init__(self, ids, seq_len, batch, seed, rank, world):
        if batch % world:
            raise ValueError(f"--batch {batch} is not a multiple of the {world} processes: the "
                             "global batch is split evenly across processes; use a multiple "
                             f"of {world}")
        self.batcher = tab_data.Batcher(ids, seq_len, batch, seed)
        self.T, self.B = int(seq_len), int(batch)
        self.per_rank = self.B // world
        self.rank = rank

    def global_batch(self):
        """The tab's next micro-batch, flat [B*T] (array 'I')."""
        return self.batcher.next_batch()

    def next(self, device):
        import torch
        flat = self.global_batch()
        lo = self.rank * self.per_rank * self.T
        mine = array("I", flat[lo:lo + self.per_rank * self.T])
        t = torch.frombuffer(bytearray(mine.tobytes()), dtype=torch.int32)
        return t.to(torch.long).view(self.per_rank, self.T).to(device)

    @property
    def position(self):
        return self.batcher.position

    @property
    def epoch(self):
        return self.batcher.epoch

    def restore(self, position):
        self.batcher.restore(position)
