"""Step 2: a byte-level BPE trained by OUR trainer on the training split, written as
tokenizer.json, and checked id-for-id against HF `tokenizers` on held-out text.

Training is exactly `mambaweb pretrain --tokenizer bpe`'s: py_engine/train/data.train_bpe
(texts, vocab_size), which reserves "<|endoftext|>" as id 0 (the document separator of
step 1) and learns merges with the GPT-2 split pattern. train.txt is given as one text: the
pre-tokenizer splits the special token out first, so this counts the same pre-tokens as the
separate files would.

Exactness: the issue asks for `tokenizers`' ids exactly. `check_exact` encodes whole texts
(the held-out split, then the training split: both take seconds) with our Tokenizer and with
tokenizers.Tokenizer.from_str(the same JSON) and raises on the first difference, naming the
text and the position.
"""
from pathlib import Path

from py_engine.train import data as tab_data

def train(corpus_file, vocab_size):
    """Our BPETokenizer trained on `corpus_file` (UTF-8 text)."""
    path = Path(corpus_file)
    if not path.is_file():
        raise ValueError(f"--corpus {path}: no such file; give the train.txt the 'corpus' "
                         "step wrote")
    if vocab_size < 257:
        raise ValueError(f"--vocab-size {vocab_size}: a BPE vocabulary needs more than the 256 "
                         "byte tokens (4096 is the default model's)")
    return tab_data.train_bpe([path.read_text(encoding="utf-8")], vocab_size)


def check_exact(tokenizer_json, texts):
    """Raise ValueError unless HF `tokenizers` gives our ids on every text; returns the
    number of ids compared."""
    import tokenizers
    ours = tab_data.tokenizer_from_json(tokenizer_json, "tokenizer.json")
    ref = tokenizers.Tokenizer.from_str(tokenizer_json)
    n = 0
    for k, text in enumerate(texts):
        # one call each: `tokenizers` splits the special token out of the text as we do
        a = list(ours.encode(text))
        b = ref.encode(text, add_special_tokens=False).ids
        if a != b:
            i = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise ValueError(f"text {k}: our ids differ from tokenizers {tokenizers.__version__}"
                             f" at id {i} (ours {a[i:i + 5]}, theirs {b[i:i + 5]}; text "
                             f"{text[max(0, i - 20):i + 20]!r} around there): the tokenizer "
                             "is not exact, do not ship it")
        n += len(a)
    return n


def build(corpus_file, vocab_size, out, heldout_file=None):
    """Train on `corpus_file`, check exactness on the held-out file (when given) and the
    corpus, then write `out`. Returns {"vocab_size", "merges", "checked_ids", "checked_on"}."""
    tok = train(corpus_file, vocab_size)
    text = tok.to_json()
    files = ([Path(heldout_file)] if heldout_file else []) + [Path(corpus_file)]
    for f in files:
        if not f.is_file():
            raise ValueError(f"--heldout {f}: no such file; give the heldout.txt the "
                             "'corpus' step wrote")
    checked = check_exact(text, [f.read_text(encoding="utf-8") for f in files])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return {"vocab_size": tok.vocab_size, "checked_ids": checked,
            "checked_on": [str(f) for f in files],
            "merges": len(tok.tok.to_config()["model"]["merges"])}
