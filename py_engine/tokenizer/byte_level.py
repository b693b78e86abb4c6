"""The tokenizer of last resort: one token per UTF-8 byte (vocab 256, no merges).

Used for models that ship no tokenizer.json (the embedded default model, a model pretrained
with the "byte-level" choice). Same interface as Tokenizer for what the pages use.
"""


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text, add_special_tokens=True):
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def to_json(self, indent=None):
        return None

    def __repr__(self):
        return "ByteTokenizer()"
