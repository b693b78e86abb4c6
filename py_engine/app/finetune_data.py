"""The train page's fine-tune data: plain text, or JSONL records with the loss on the answer
only — {"prompt", "completion"} records (loss on the completion and its end token) and chat
{"messages": [...]} records rendered with the base model's chat template (loss on the
assistant's replies; py_engine/train/chat_data.py).

What a person drops is sniffed file by file: a file whose first non-blank line is a JSON object
with "completion" or "messages" is JSONL, any other file plain text; mixing the two is refused.
Records become rows (py_engine/app/finetune._rows_from_records, the `mambaweb finetune` path):
    ids [T]     the record's tokens, padded with the end token to seq_len T (a longer record
                keeps its last T tokens)
    labels [T]  the id where the loss applies, IGNORE (-100) elsewhere (prompt, padding)
A run keeps its rows as one u32 stream (pack/unpack: per row T ids then T labels, IGNORE
stored as NO_LABEL) so the autosave and the resume of the token-stream runs carry them as is.

Pure stdlib: imported inside Pyodide.
"""
import json
from array import array

from py_engine.app import finetune as FT
from py_engine.train.data import permutation
from py_engine.train.trainer import IGNORE

NO_LABEL = 0xFFFFFFFF        # IGNORE in the packed u32 stream
# what the page says about each kind of data, and where its loss applies
KIND_TEXT = {"text": "plain text", "prompt_completion": "JSONL prompt/completion records",
             "chat": "JSONL chat records", "mixed": "JSONL prompt/completion and chat records"}
LOSS_TEXT = {"text": "every token", "prompt_completion": "the completions only",
             "chat": "the assistant's replies only",
             "mixed": "the completions and the assistant's replies only"}
CHAT_KEYS = ("chat_template", "bos_token", "eos_token", "unk_token", "pad_token")


def _is_jsonl(text):
    """Whether a file's first non-blank line is a record (an object with "completion" or
    "messages"): a plain-text file that happens to start with "{" stays text."""
    for line in text.splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                return False
            return isinstance(rec, dict) and ("completion" in rec or "messages" in rec)
    return False


def parse(texts, names=()):
    """(kind, records): kind "text" (records None), "prompt_completion", "chat" or "mixed";
    records as finetune._records gives them, chat records' "line" naming their file."""
    kinds, records = [], []
    for i, text in enumerate(texts):
        name = names[i] if i < len(names) else f"file {i + 1}"
        if not _is_jsonl(text):
            kinds.append(("text", name))
            continue
        try:
            recs = FT._records(text)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        for r in recs:
            if isinstance(r, dict):
                r["line"] = f"{r['line']} of {name}"
        records.extend(recs)
        kinds.append(("jsonl", name))
    plain = [n for k, n in kinds if k == "text"]
    if not records:
        return "text", None
    if plain:
        raise ValueError(f"the data mixes plain text ({', '.join(plain[:3])}) with JSONL "
                         "records: fine-tune on one kind at a time (drop only the .jsonl "
                         "files, or only the text)")
    chat = sum(1 for r in records if isinstance(r, dict))
    kind = "chat" if chat == len(records) else "mixed" if chat else "prompt_completion"
    return kind, records


def needs_template(kind):
    return kind in ("chat", "mixed")


def chat_config(tokenizer_config, model_name):
    """The parts of the base's tokenizer_config.json a chat record needs (its template and
    special tokens), or one sentence refusing chat data when there is no template."""
    conf = tokenizer_config if isinstance(tokenizer_config, dict) else {}
    if not conf.get("chat_template"):
        where = ("no chat_template in its tokenizer_config.json" if tokenizer_config
                 else "no tokenizer_config.json")
        raise ValueError(f"{model_name} has no chat template ({where}), so chat records "
                         "(\"messages\") cannot be rendered the way the model expects: give "
                         "prompt/completion records, or fine-tune a model that has a template")
    return {k: conf[k] for k in CHAT_KEYS if k in conf}


class _PlacedTokenizer:
    """The run's tokenizer plus id_to_token, which chat_data needs to place each token on the
    chat text's bytes (the trainer's ByteTokenizer and BPE wrapper do not expose it)."""

    def __init__(self, tok):
        self.tok = tok
        inner = getattr(tok, "tok", None)
        if inner is None:            # one id per UTF-8 byte: the byte-level vocabulary
            from py_engine.tokenizer import Tokenizer
            from py_engine.train.data import byte_level_tokenizer_config
            inner = Tokenizer.from_config(byte_level_tokenizer_config())
        self.id_to_token = inner.id_to_token
        self.eos_id = tok.eos_id

    def encode(self, text, add_special_tokens=False):
        return self.tok.encode(text, add_special_tokens=add_special_tokens)


def rows(kind, records, tok, seq_len, chat=None):
    """[(ids [T], labels [T])] of the records (see the module docstring); chat: chat_config()
    for chat records."""
    placed = _PlacedTokenizer(tok) if needs_template(kind) else tok
    out = FT._rows_from_records(records, placed, seq_len, chat)
    if len(out) < 2:
        raise ValueError(f"the data holds {len(out)} record: give at least 2 (one is held out "
                         "to measure the fine-tune)")
    return out


def describe(kind, records=None, row_list=None):
    """What the page shows about the data: {"kind", "label", "loss_on", "records",
    "prompt_completion", "chat", "loss_tokens"}."""
    chat = sum(1 for r in records or () if isinstance(r, dict))
    out = {"kind": kind, "label": KIND_TEXT[kind], "loss_on": LOSS_TEXT[kind],
           "records": len(records or ()), "prompt_completion": len(records or ()) - chat,
           "chat": chat}
    if row_list is not None:
        out["loss_tokens"] = sum(1 for _, lab in row_list for l in lab if l != IGNORE)
    return out


def pack(row_list):
    """Rows -> one u32 stream: per row its T ids, then its T labels (IGNORE as NO_LABEL)."""
    out = array("I")
    for ids, labels in row_list:
        out.extend(ids)
        out.extend(NO_LABEL if l == IGNORE else l for l in labels)
    return out


def unpack(stream, seq_len):
    """pack's inverse."""
    T = int(seq_len)
    if len(stream) % (2 * T):
        raise ValueError(f"the saved records hold {len(stream)} numbers, not whole rows of "
                         f"{T} tokens and {T} labels: start the run again")
    out = []
    for k in range(0, len(stream), 2 * T):
        ids = list(stream[k:k + T])
        labels = [IGNORE if l == NO_LABEL else l for l in stream[k + T:k + 2 * T]]
        out.append((ids, labels))
    return out


def prompt_of(row, most=48):
    """The tokens before a row's first labelled one (its prompt), at most the last `most`."""
    ids, labels = row
    first = next((k for k, l in enumerate(labels) if l != IGNORE), len(ids))
    return list(ids[max(0, first - most):first]) or list(ids[:1])


class RowBatcher:
    """Batches of whole records, in a fixed-seed order per epoch: data.Batcher's interface
    (windows, epoch, position / restore) over rows instead of windows of a token stream.

    next_pair() -> (ids, labels), each flat [batch_size * T]."""

    def __init__(self, row_list, batch_size, seed=0):
        if not row_list:
            raise ValueError("no records to train on: give at least 2")
        self.rows = row_list
        self.Bsz = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.index = 0
        self._order = None

    @property
    def windows(self):
        return len(self.rows)

    def _next_row(self):
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, permutation(len(self.rows), self.seed, self.epoch))
        row = self.rows[self._order[1][self.index]]
        self.index += 1
        if self.index >= len(self.rows):
            self.epoch += 1
            self.index = 0
        return row

    def next_pair(self):
        ids, labels = [], []
        for _ in range(self.Bsz):
            i, l = self._next_row()
            ids.extend(i)
            labels.extend(l)
        return ids, labels

    @property
    def position(self):
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position):
        epoch, index = int(position["epoch"]), int(position["index"])
        if not 0 <= index < len(self.rows):
            raise ValueError(f"saved data position {index} is outside the {len(self.rows)} "
                             "training records: start the run again")
        self.epoch, self.index = epoch, index
