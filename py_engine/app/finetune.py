"""Fine-tuning the loaded model (py_engine/app/generate_session.current) in the tab: LoRA by
default (the base frozen, only the adapters train), or the whole model.

Data: plain text (next-token loss on every token), or JSONL records {"prompt", "completion"}
(loss on the completion tokens only: the prompt's labels are -100, as a masked-label torch
loss), or chat records {"messages": [{"role", "content"}, ...]} rendered with the model's chat
template (tokenizer_config.json, passed as `tokenizer_config`) with the loss on the assistant's
tokens only (py_engine/train/chat_data.py). Modes: LoRA (rsLoRA scale alpha/sqrt(r) with
`rslora`), WSLA (`wsla`: only the B/C projection rows train) or every weight. A held-out
split (the last `eval_frac` of the text, or of the records) is scored before
and after, so a run says whether it helped. Snippets drive it: prepare(...), then step() per
optimizer step (one JSON-able dict each), evaluate(), adapter_files().
"""
import json
import struct

from py_engine.app import generate_session
from py_engine.io.weight_formats import weights_format
from py_engine.train import chat_data
from py_engine.train.data import Batcher
from py_engine.train.trainer import IGNORE, Trainer

# The run holds its own reference to the model it trains: a page may load another model into
# generate_session meanwhile (the generate page loads its default on boot).
state = {"model": None, "tokenizer": None, "trainer": None, "adapter": None, "train": None,
         "eval": None, "opts": None}


def _records(text):
    """JSONL records, or None when `text` is plain text: (prompt, completion) tuples, and
    {"messages": [...], "line": n} dicts for chat records."""
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines or not lines[0].lstrip().startswith("{"):
        return None
    out = []
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"data line {n}: not JSON ({e}); give plain text or one JSON object "
                             "per line") from None
        if isinstance(rec, dict) and "messages" in rec:
            out.append({"messages": rec["messages"], "line": n})
            continue
        if not isinstance(rec, dict) or "completion" not in rec:
            raise ValueError(f"data line {n}: a JSONL record needs \"prompt\" and "
                             "\"completion\", or \"messages\" (a chat)")
        out.append((str(rec.get("prompt", "")), str(rec["completion"])))
    return out


def _rows_from_records(records, tok, T, tokenizer_config=None):
    """[(ids [T], labels [T])]: prompt + completion (+ eos), labels -100 on the prompt and the
    padding; a chat record: its rendered conversation, labels on the assistant's tokens; a
    record longer than T keeps its last T tokens."""
    eos = tok.eos_id if getattr(tok, "eos_id", None) is not None else 0
    chat = None
    rows = []
    for rec in records:
        if isinstance(rec, dict):
            if chat is None:
                if tokenizer_config is None:
                    raise ValueError(f"data line {rec['line']}: chat records need the model's "
                                     "chat template, and this model has no "
                                     "tokenizer_config.json; give prompt/completion records")
                chat = chat_data.template_from_config(tokenizer_config)
            full_ids, full_labels = chat_data.chat_row(tok, chat[0], chat[1], rec["messages"],
                                                       f"data line {rec['line']}")
            ids, labels = full_ids[-T:], full_labels[-T:]
        else:
            prompt, completion = rec
            p = list(tok.encode(prompt))
            c = list(tok.encode(completion)) + [eos]
            ids = (p + c)[-T:]
            labels = ([IGNORE] * len(p) + c)[-T:]
        pad = T - len(ids)
        rows.append((ids + [eos] * pad, labels + [IGNORE] * pad))
    return rows


def prepare(text, *, lora=True, r=8, alpha=16, targets=None, lr=None, steps=100, batch=4,
            seq_len=128, eval_frac=0.1, seed=0, weight_decay=0.0, rslora=False, wsla=False,
            tokenizer_config=None):
    """Tokenize `text`, split off the held-out part, attach a fresh adapter (lora) and build
    the trainer. Returns a summary dict. wsla (with lora=False): train only the rows of the
    B/C projections (the trainer's WSLA mask); tokenizer_config: the parsed
    tokenizer_config.json, needed for chat records."""
    from py_engine.train.lora import DEFAULT_TARGETS, LoraAdapter
    model, tok = generate_session.current["model"], generate_session.current["tokenizer"]
    if model is None:
        raise ValueError("load a model first")
    if tok is None:
        raise ValueError("this model has no tokenizer.json: fine-tuning needs one")
    fmt = weights_format(model.weights)
    if lora and wsla:
        raise ValueError("choose LoRA or WSLA, not both")
    if fmt != "f32" and not lora:
        raise ValueError(f"the model was loaded with {fmt} weights, which stay frozen: "
                         "fine-tune it with LoRA (QLoRA), or load it in f32 to train "
                         f"{'the B/C rows' if wsla else 'every weight'}")
    release()
    state.update(model=model, tokenizer=tok)
    records = _records(text)
    if records is not None:
        rows = _rows_from_records(records, tok, seq_len, tokenizer_config)
        n_eval = max(1, int(len(rows) * eval_frac)) if len(rows) > 1 else 0
        train_rows, eval_rows = rows[:len(rows) - n_eval], rows[len(rows) - n_eval:]
        state["train"] = ("rows", train_rows)
        state["eval"] = eval_rows
        n_tokens = sum(sum(1 for l in lab if l != IGNORE) for _, lab in rows)
    else:
        ids = list(tok.encode(text))
        train_ids, state["eval"] = split_heldout(ids, seq_len, eval_frac)
        state["train"] = ("batcher", Batcher(train_ids, seq_len, batch, seed))
        n_tokens = len(ids)
    adapter = LoraAdapter(model, r=r, alpha=alpha, targets=targets or DEFAULT_TARGETS,
                          rslora=rslora, seed=seed).attach() if lora else None
    lr = lr if lr is not None else (1e-3 if lora else 1e-4)
    state["adapter"] = adapter
    state["trainer"] = Trainer(model, lr=lr, weight_decay=weight_decay, warmup=min(10, steps // 10),
                               total_steps=steps, adapter=adapter, wsla=wsla and not lora)
    state["opts"] = {"batch": batch, "seq_len": seq_len, "seed": seed, "step": 0}
    trained = state["trainer"].trained_numel()
    total = sum(t.numel for t in model.weights.values())
    return {"mode": "lora" if lora else "wsla" if wsla else "full", "trainable_params": trained,
            "base_formats": sorted({t.dtype for t in model.weights.values()}),
            "model_params": total, "train_rows": _n_train(), "eval_rows": len(state["eval"]),
            "tokens": n_tokens, "lr": lr}


def split_heldout(ids, seq_len, eval_frac=0.1):
    """(train ids, held-out rows): the last `eval_frac` of the token stream (at least one
    window of seq_len) is held out, as [(ids [seq_len], labels = ids)] rows."""
    if len(ids) < 2 * (seq_len + 1):
        raise ValueError(f"the text is {len(ids)} tokens; give at least {2 * (seq_len + 1)} "
                         "(or lower seq_len)")
    cut = len(ids) - max(seq_len + 1, int(len(ids) * eval_frac))
    ev = ids[cut:]
    rows = [(ev[i:i + seq_len], ev[i:i + seq_len]) for i in range(0, len(ev) - seq_len + 1, seq_len)]
    return ids[:cut], rows


async def read_tokenizer_config(source):
    """The model folder's tokenizer_config.json as a dict (its chat template replaced by
    chat_template.jinja when that file exists, as transformers saves it), or None."""
    if not await source.exists("tokenizer_config.json"):
        conf = None
    else:
        raw = await source.read("tokenizer_config.json")
        try:
            conf = json.loads(bytes(raw).decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{source.where('tokenizer_config.json')}: not valid JSON "
                             f"({e})") from None
    if await source.exists("chat_template.jinja"):
        conf = dict(conf or {})
        conf["chat_template"] = bytes(await source.read("chat_template.jinja")).decode("utf-8")
    return conf


def _n_train():
    kind, data = state["train"]
    return len(data) if kind == "rows" else data.windows


def _next_batch():
    kind, data = state["train"]
    o = state["opts"]
    if kind == "batcher":
        ids = list(data.next_batch())       # labels = ids (the trainer shifts them)
        return ids, ids, o["batch"], o["seq_len"]
    k = o["step"] * o["batch"]
    rows = [data[(k + j) % len(data)] for j in range(o["batch"])]
    ids = [i for r in rows for i in r[0]]
    labels = [l for r in rows for l in r[1]]
    return ids, labels, o["batch"], o["seq_len"]


async def step():
    ids, labels, Bsz, T = _next_batch()
    r = await state["trainer"].train_step([(ids, labels)], Bsz, T)
    state["opts"]["step"] += 1
    return {"step": state["opts"]["step"], "loss": r["loss"], "lr": r["lr"],
            "grad_norm": r["grad_norm"]}


async def evaluate():
    """Mean next-token loss over the held-out rows (completion tokens only for JSONL)."""
    return await heldout_loss(state["model"], state["eval"])


async def heldout_loss(model, rows):
    """{"eval_loss", "eval_tokens"}: mean next-token loss of `model` over [(ids, labels)]
    rows, one forward each (no gradients)."""
    from py_engine.autograd.functional import Ctx, cross_entropy
    from py_engine.gpu.tensor import Tensor
    from py_engine.train.trainer import shift_targets
    total, count = 0.0, 0.0
    for ids, labels in rows:
        T = len(ids)
        dev = model.device
        ids_t = Tensor.from_list(dev, (T,), list(ids), "u32")
        tgt_t = Tensor.from_list(dev, (T,), shift_targets(labels, 1, T), "i32")
        batch = dev.batch(stream=True)
        logits = model.forward(Ctx(batch), ids_t, 1)
        loss = cross_entropy(Ctx(batch), logits, tgt_t)
        batch.submit()
        mean, n = struct.unpack("<2f", await loss.to_bytes())
        for t in (loss, logits, ids_t, tgt_t):
            t.release()
        total += mean * n
        count += n
    return {"eval_loss": total / count if count else None, "eval_tokens": int(count)}


async def merged_files():
    """Fold the adapter into the base and return the model as HF files (config.json,
    model.safetensors) — the base is changed in place: call last."""
    from py_engine.train.checkpoint import config_json, model_safetensors_parts
    model = state["model"]
    fmt = weights_format(model.weights)
    if fmt != "f32":
        raise ValueError(f"merging needs an f32 base; this one holds {fmt} weights: "
                         "keep the adapter, or fine-tune a base loaded in f32 to merge")
    if state["adapter"] is not None:
        state["adapter"].merge()
    parts = model_safetensors_parts(model)
    data = []
    for kind, p in parts:
        data.append(p if kind == "bytes" else await p.to_bytes())
    return {"config.json": config_json(model.cfg, state["tokenizer"]),
            "model.safetensors": b"".join(data)}


async def adapter_files(base_model=None):
    if state["adapter"] is None:
        raise ValueError("this run trains the whole model: save it as a checkpoint instead")
    return await state["adapter"].to_files(base_model)


def release():
    if state["trainer"] is not None:
        state["trainer"].release()
    if state["adapter"] is not None:
        state["adapter"].release()
    state.update(model=None, tokenizer=None, trainer=None, adapter=None, train=None, eval=None,
                 opts=None)
