"""What the generate page (and `mambaweb run`) drive: one loaded model, its tokenizer, a
conversation state, streaming generation with cancellation, snapshots of the state.

Snippets call these coroutines; progress and tokens reach the page as events
("load_progress", "token", "done").
"""
import time

from py_engine.app import runtime
from py_engine.app.events import emit
from py_engine.models.generate import Generator, SamplingConfig
from py_engine.models.mamba import MambaModel
from py_engine.train.data import ByteTokenizer

# pending: the last id a generation yielded. Generator.stream leaves the state holding every
# yielded id but the last, so continuing the conversation feeds it before the new prompt.
# Tokens a conversation holds (the attention layers' KV cache, the repetition-penalty history).
MAX_TOKENS = 8192
current = {"model": None, "tokenizer": None, "name": None, "gen": None, "cancel": False,
           "pending": None}


async def load(base_url, name=None, files=(), weights_format="f32", cache=True):
    """Load the model at base_url (…/weights/<name>/) and its tokenizer; returns a summary.
    weights_format: f32, or f16/bf16/q8/q4 to keep the matrices narrow on the GPU.
    cache: keep the fetched weight files in this browser (py_engine/io/cached_source.py)."""
    from py_engine.io.byte_sources import HttpSource
    return await _load(HttpSource(base_url, files), name or base_url, files, weights_format,
                       {"kind": "served", "name": name or base_url}, cache)


async def plan(base_url, files=()):
    """What each weight format would take on the GPU for the served model at base_url, read
    from config.json and the weight headers only (through the cache, like a load), and whether
    this device runs it: {formats: {fmt: {gpu_bytes, problem}}, weight_bytes, file_dtypes}."""
    from py_engine.io.byte_sources import HttpSource
    from py_engine.io.hf_loader import read_plan
    source = _cached(HttpSource(base_url, files), True)
    ok = False
    try:
        _, _, p = await read_plan(source)
        ok = True
    finally:
        summary = await _finish_cache(source, ok)
    return {**formats_table(p), "cache": summary}


def formats_table(p):
    from py_engine.io.weight_formats import format_problem
    features = getattr(runtime.device, "features", ())
    return {"formats": {fmt: {"gpu_bytes": n, "problem": format_problem(fmt, features)}
                        for fmt, n in p["gpu_bytes_by_format"].items()},
            "weight_bytes": p["weight_bytes"], "file_dtypes": p["file_dtypes"]}


def _cached(source, cache):
    from py_engine.io import cached_source
    return cached_source.CachedSource(source) if cache and cached_source.available() else source


async def _finish_cache(source, ok):
    """Close the cache entries of `source`; say once (event "cache_notice") when the browser's
    storage refused a file. Returns the summary (None when nothing was cached)."""
    if not hasattr(source, "finish"):
        return None
    summary = await source.finish(ok)
    if summary.get("notice"):
        emit("cache_notice", text=summary["notice"])
    return summary


async def load_hub(spec, endpoint=None, weights_format="f32", cache=True):
    """Load `org/name[@revision]` from a Hub-layout endpoint (default the Hugging Face Hub;
    py_engine/io/hub.py). What the repo holds and its size are emitted ("load_plan") before
    any weight byte is read; a gated, missing or unsupported repo raises one sentence."""
    from py_engine.io.hub import HubSource, parse_repo
    repo_id, revision = parse_repo(spec)
    unload()          # a failed lookup leaves nothing loaded, as a failed load does
    source = HubSource(endpoint, repo_id, revision)
    plan = await source.inspect()
    emit("load_plan", **plan)
    return await _load(source, source.label, plan["files"], weights_format,
                       {"kind": "hub", "label": source.label, "repo": repo_id,
                        "revision": revision, "endpoint": source.endpoint}, cache)


async def load_files(files, name="local model", origin=None, weights_format="f32"):
    """Load a model from files the user picked ({relative path: registry id}); nothing is
    uploaded: the bytes go File -> GPU inside this tab."""
    from py_engine.io.byte_sources import DroppedFileSource
    if "config.json" not in files:
        if any(p.endswith(".bin") for p in files):
            raise ValueError("that looks like an MBJS file: convert it to an HF folder on the "
                             "Convert page first, then open the folder here")
        raise ValueError("no config.json among the chosen files: choose the model's folder "
                         "(config.json + model.safetensors, or the shards and their index)")
    return await _load(DroppedFileSource(files, name), name, list(files), weights_format,
                       origin or {"kind": "folder", "name": name})


async def _load(source, name, files, weights_format="f32", origin=None, cache=False):
    """cache: weight files pass through the browser's cache (HTTP sources only)."""
    source = _cached(source, cache)
    ok = False
    try:
        result = await _load_from(source, name, files, weights_format, origin)
        ok = True
    finally:
        summary = await _finish_cache(source, ok)
    result["cache"] = summary
    return result


async def _load_from(source, name, files, weights_format, origin):
    from py_engine.app.model_card import describe
    from py_engine.io.hf_loader import load_from_source
    from py_engine.io.weight_formats import check_device_format, format_summary
    from py_engine.io.weight_formats import weights_format as format_of
    check_device_format(runtime.device, weights_format)   # before the old model is dropped
    unload()
    t0 = time.perf_counter()

    def progress(p):
        emit("load_progress", **p)

    def on_plan(p):
        # before the first weight byte: what every format would take for this model
        emit("weights_plan", **formats_table(p))

    await refuse_bidirectional(source, name)
    report = {}
    cfg, weights = await load_from_source(runtime.device, source, progress, weights_format,
                                          report, on_plan)
    fmt = format_of(weights)
    gpu = {"format": fmt, "gpu_bytes": format_summary(weights)["gpu_bytes"],
           "narrow": sum(1 for t in weights.values() if t.dtype != "f32"),
           "tensors": len(weights), "requested": weights_format}
    model = MambaModel(runtime.device, cfg, weights)
    try:
        tok = await _load_tokenizer(source, files, cfg.vocab_size)
    except Exception:
        model.release()
        raise
    current.update(model=model, tokenizer=tok, name=name)
    params = sum(t.numel for n, t in model.weights.items()
                 if not (cfg.tie_word_embeddings and n == "lm_head.weight"))
    return {"name": name, "model_type": cfg.model_type, "layers": cfg.num_hidden_layers,
            "d_model": cfg.hidden_size, "vocab_size": cfg.vocab_size, "params": params,
            "tokenizer": tokenizer_name(tok),
            "load_s": round(time.perf_counter() - t0, 3),
            "weights": gpu,
            "card": describe(name, cfg, params, tok, report, origin or {"name": name},
                             fmt, MAX_TOKENS, gpu)}


async def refuse_bidirectional(source, name):
    """A bidirectional model cannot generate (each output reads the tokens after it): say so
    in one sentence before any weight is read. A config.json that does not parse is left to
    the loader, whose message names the problem."""
    import json
    from py_engine.models.config import MambaConfig
    from py_engine.nn.bidirectional import is_bidirectional
    try:
        cfg = MambaConfig.from_hf_dict(json.loads((await source.read("config.json")).decode()),
                                       source.where("config.json"))
    except Exception:
        return
    if is_bidirectional(cfg):
        merge = (cfg.bidirectional or {}).get("merge", "mean")
        raise ValueError(f"{name} is a bidirectional model ({merge} merge): every output reads "
                         "the tokens after it, so it cannot generate text one token at a "
                         "time; open a left-to-right model here, and use this one for "
                         "masked-token prediction or classification")


def tokenizer_name(tok):
    """What the page shows for a tokenizer (never a Python repr): None when there is none."""
    if tok is None:
        return None
    if getattr(tok, "kind", None) == "byte":
        return "byte-level (one id per UTF-8 byte)"
    return "tokenizer.json, BPE, {:,} ids".format(tok.vocab_size)


async def _load_tokenizer(source, files, vocab_size):
    """The model's tokenizer.json when it has one; else one id per UTF-8 byte when the
    vocabulary holds 256 ids; else None (token ids only)."""
    if (not files or "tokenizer.json" in files) and await source.exists("tokenizer.json"):
        from py_engine.tokenizer import Tokenizer
        return Tokenizer.from_str((await source.read("tokenizer.json")).decode("utf-8"))
    if vocab_size >= 256:
        return ByteTokenizer()
    return None


async def load_adapter(files=None, base_url=None):
    """Switch the loaded model's LoRA adapter (a PEFT folder: {name: bytes}, or a URL), without
    reloading the base; None/None removes it. Recorded decode graphs are dropped."""
    from py_engine.train.lora import MemorySource, load_adapter as _load
    model = current["model"]
    if model is None:
        raise ValueError("load a model first, then its adapter")
    if model.adapter is not None:
        model.adapter.release()
    if current["gen"] is not None:
        current["gen"].release()
        current["gen"] = None
    if files is None and base_url is None:
        return {"adapter": None}
    if files is not None:
        source = MemorySource(files)
    else:
        from py_engine.io.byte_sources import HttpSource
        source = HttpSource(base_url)
    ad = await _load(model, source)
    return {"adapter": {"r": ad.r, "alpha": ad.alpha, "modules": len(ad.A),
                        "params": sum(t.numel for t in ad.params().values())}}


def unload():
    if current["gen"] is not None:
        current["gen"].release()
    if current["model"] is not None and current["model"].adapter is not None:
        current["model"].adapter.release()
    if current["model"] is not None:
        current["model"].release()
    current.update(model=None, tokenizer=None, gen=None, pending=None)


def request_cancel():
    current["cancel"] = True


def encode(prompt=None, ids=None):
    if ids:
        return [int(i) for i in ids]
    tok = current["tokenizer"]
    if tok is None:
        raise ValueError("this model has no tokenizer.json: give token ids instead of text")
    return tok.encode(prompt)


async def generate(prompt=None, ids=None, max_new_tokens=64, sampling=None, stop_ids=(),
                   keep_state=False):
    """Stream a continuation; emits "token" events, returns {ids, text, tokens_per_s, ...}.

    keep_state: continue the conversation (the state after the last call) instead of
    starting fresh."""
    model, tok = current["model"], current["tokenizer"]
    if model is None:
        raise RuntimeError("no model is loaded: choose one first")
    prompt_ids = list(encode(prompt, ids))
    cfg = SamplingConfig.from_dict(sampling)
    gen = current["gen"]
    if gen is None or not keep_state:
        if gen is not None:
            gen.release()
        gen = current["gen"] = Generator(model, cfg, max_tokens=MAX_TOKENS, group="auto")
        current["pending"] = None
    if current["pending"] is not None:
        prompt_ids = [current["pending"]] + prompt_ids
        current["pending"] = None
    gen.cfg = cfg
    current["cancel"] = False
    out, t0 = [], time.perf_counter()
    t_first = None
    async for tok_id in gen.stream(prompt_ids, max_new_tokens, tuple(stop_ids),
                                   cancelled=lambda: current["cancel"]):
        if t_first is None:
            t_first = time.perf_counter()
        out.append(tok_id)
        elapsed = time.perf_counter() - t0
        text = tok.decode(out) if tok is not None and (len(out) < 256 or len(out) % 8 == 0) else None
        emit("token", id=tok_id, n=len(out), text=text,
             tokens_per_s=(len(out) - 1) / (time.perf_counter() - t_first) if len(out) > 1 else 0.0,
             elapsed_s=elapsed)
    current["pending"] = out[-1] if out else None
    total = time.perf_counter() - t0
    decode_s = time.perf_counter() - (t_first or t0)
    result = {"ids": out, "text": tok.decode(out) if tok is not None else None,
              "prompt_tokens": len(prompt_ids), "cancelled": current["cancel"],
              "time_to_first_token_s": (t_first - t0) if t_first else None,
              "tokens_per_s": (len(out) - 1) / decode_s if len(out) > 1 and decode_s > 0 else 0.0,
              "total_s": total, "dispatches_per_token": gen.dispatches_per_token}
    emit("done", **{k: v for k, v in result.items() if k != "ids"})
    return result


async def prompt_logits(prompt=None, ids=None, stepwise=False):
    """f32 bytes [len, V] of the prompt's logits: the parallel path, or with `stepwise` the
    recurrent decode path fed one token at a time (the two must agree)."""
    model = current["model"]
    ids = encode(prompt, ids)
    if not stepwise:
        return await model.logits(ids)
    state = model.new_state()
    try:
        return await model.step_logits(ids, state)
    finally:
        state.release()


async def save_state():
    gen = current["gen"]
    if gen is None:
        raise RuntimeError("nothing to save yet: generate first")
    return {"state": await gen.state.to_bytes(), "model": current["name"],
            "pending": current["pending"]}


def restore_state(data, pending=None):
    """data: save_state()'s state bytes; pending: its "pending" id (fed before the next
    prompt, as the conversation had it)."""
    model = current["model"]
    if model is None:
        raise RuntimeError("load the model this state belongs to first")
    gen = current["gen"]
    if gen is None:
        gen = current["gen"] = Generator(model, SamplingConfig(), max_tokens=MAX_TOKENS,
                                         group="auto")
    gen.state.load_bytes(data)
    current["pending"] = pending
    return {"tokens_seen": gen.state.tokens_seen}
