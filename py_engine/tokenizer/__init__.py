"""Byte-level BPE tokenizer in pure Python (stdlib only, runs in Pyodide).

Gives the ids of the HF `tokenizers` library for GPT-2, GPT-NeoX (Mamba), Qwen2 and Llama-3
style tokenizer.json files, and trains new ones:

    from py_engine.tokenizer import Tokenizer
    tok = Tokenizer.from_file("tokenizer.json")      # or a folder, or vocab.json + merges.txt
    ids = tok.encode("def f(x):\n    return x")
    text = tok.decode(ids)
    for ids in tok.encode_batches(chunks): ...        # a corpus streamed in chunks
    tok = Tokenizer.train(texts, vocab_size=4096, special_tokens=["<|endoftext|>"])
    tok.save("tokenizer.json")                       # loads in `tokenizers`, same ids

Files: pretokenize.py (split patterns), normalize.py (NFC), added.py (added tokens),
bytelevel.py (byte <-> character map), bpe.py (merges), tokenizer.py (loading, encode, decode,
streaming), train.py (training), unicode_tables.py (generated tables).
"""
from .errors import TokenizerError, UnsupportedTokenizer
from .tokenizer import Tokenizer

__all__ = ["Tokenizer", "TokenizerError", "UnsupportedTokenizer"]
