"""The masked-token objective that trains bidirectional models (py_engine/nn/bidirectional.py).

A bidirectional model sees every token, so next-token prediction would let it read the answer.
Instead about MASK_RATE of the positions (at least one per sequence) are replaced in the input by
the mask token (config.json mambaweb_bidirectional.mask_token_id, a vocabulary row of its own),
and the loss is the cross-entropy of the original token at those positions only, read from the
LM head at the same position (no shift): BERT's masked-LM head with the tied/untied LM head as
its decoder. Unlike BERT every chosen position gets the mask token (no 10% random / 10% kept).

Which positions are masked is a function of (optimizer step, position, the sequence's tokens),
so a resumed run masks exactly as the uninterrupted one would.

Pure stdlib: this module is imported inside Pyodide.
"""
import struct
import zlib

IGNORE = -100
MASK_RATE = 0.15


class MaskedTokens:
    def __init__(self, mask_id):
        self.mask_id = int(mask_id)

    @classmethod
    def of(cls, cfg):
        """The objective a model trains with: None (next-token) unless it is bidirectional."""
        if not any(k.startswith("bidi_") for k in cfg.layers):
            return None
        mask_id = (cfg.bidirectional or {}).get("mask_token_id")
        if mask_id is None:
            raise ValueError("this bidirectional model's config.json has no "
                             "mambaweb_bidirectional.mask_token_id, so it cannot train with "
                             "masked tokens; make it with `mambaweb generate-bin --bidi` or the "
                             "pretrain page")
        return cls(mask_id)

    def apply(self, ids, Bsz, T, step):
        """(inputs, targets) flat [Bsz*T]: masked inputs, and the original id where masked,
        IGNORE elsewhere."""
        inputs, targets = list(ids), [IGNORE] * (Bsz * T)
        for b in range(Bsz):
            row = ids[b * T:(b + 1) * T]
            salt = zlib.crc32(struct.pack(f"<{T}i", *row))
            chosen = [t for t in range(T)
                      if zlib.crc32(struct.pack("<III", step, t, salt)) % 10_000 < MASK_RATE * 10_000]
            if not chosen:
                chosen = [zlib.crc32(struct.pack("<II", step, salt)) % T]
            for t in chosen:
                i = b * T + t
                targets[i] = ids[i]
                inputs[i] = self.mask_id
        return inputs, targets
