"""The model card the generate page shows for whatever is loaded: what it is (family, layer
schedule, size), how its weights were stored, its tokenizer, its context, where it came from.

Built from the loaded objects themselves (config, GPU weights, tokenizer, the loader's report),
never from what the page asked for, so the card cannot claim a model that is not loaded.
Every value is a plain string a person reads; `facts` keeps the numbers for tests and tools.
"""

FAMILIES = {"mamba": "Mamba-1", "falcon_mamba": "Falcon-Mamba", "mamba2": "Mamba-2",
            "mamba3": "Mamba-3", "nemotron_h": "Hybrid (NemotronH)"}
# The hybrid pattern letters (NemotronH's M * -, and + for the gated MLP: py_engine/train/init.py),
# used to write a hybrid schedule compactly
LETTERS = {"mamba1": "M", "mamba2": "M", "mamba3": "M", "attention": "*", "mlp": "-", "gated_mlp": "+"}


def schedule_text(layers):
    """['mamba2', 'mamba2', 'attention', 'mlp'] -> '2 × mamba2, 1 × attention, 1 × mlp'
    (runs in order); a single kind -> '24 × mamba1'. Hybrids also get their pattern string."""
    runs = []
    for kind in layers:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    text = ", ".join(f"{n} × {k}" for k, n in runs[:8]) + (" …" if len(runs) > 8 else "")
    if len(set(layers)) > 1:
        text += " (pattern " + "".join(LETTERS.get(k, "?") for k in layers) + ")"
    return text


def virtual_text(cfg):
    """', run as 8 logical layers (0,1,0,1,…)' for a virtual schedule (config.json
    mambaweb_virtual_layers: shared weights, one state per logical layer), else ''."""
    v = list(cfg.virtual_layers or [])
    if not v:
        return ""
    shown = ",".join(map(str, v[:16])) + (",…" if len(v) > 16 else "")
    return f", run as {len(v)} logical layers ({shown})"


def params_text(n):
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}k"


def tokenizer_facts(tok):
    """(kind, vocab size or None, text)."""
    if tok is None:
        return "none", None, "none: prompts are token ids"
    if getattr(tok, "kind", None) == "byte":
        return "byte", 256, "byte-level (one id per UTF-8 byte), 256 ids"
    return "bpe", tok.vocab_size, "byte-level BPE (tokenizer.json), {:,} ids".format(tok.vocab_size)


def weight_text(report, weights_format):
    files = report.get("weight_files") or []
    kind = ("PyTorch .bin (read without unpickling)" if files and files[0].endswith(".bin")
            else "safetensors")
    shards = f", {len(files)} shards" if len(files) > 1 else ""
    dtypes = "/".join(d.lower() for d in report.get("file_dtypes") or []) or "?"
    gpu = "f32" if weights_format == "f32" else weights_format
    return f"{kind}{shards}, {dtypes} in the file, {gpu} on the GPU"


def bytes_text(n):
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def gpu_text(gpu):
    """'1.23 MB of weights, 14 of 32 tensors q8 (the rest f32)' from `gpu` = {format,
    gpu_bytes, narrow, tensors} (what the loaded weights occupy, counted on the GPU)."""
    if not gpu:
        return "–"
    text = f"{bytes_text(gpu['gpu_bytes'])} of weights"
    if gpu["format"] == "f32":
        return text + ", all f32"
    return text + f", {gpu['narrow']} of {gpu['tensors']} tensors {gpu['format']} (the rest f32)"


def context_text(cfg, max_tokens):
    if "attention" in cfg.layers:
        return (f"{max_tokens:,} tokens per conversation (the attention layers' KV cache this "
                "page allocates)")
    return "no fixed limit: a recurrent state of constant size carries any length"


def source_text(origin):
    kind = origin.get("kind")
    if kind == "hub":
        return f"Hub: {origin['label']} at {origin['endpoint']}"
    if kind == "folder":
        return f"a folder from this computer: {origin.get('name', '')}"
    if kind == "mbjs":
        return f"a dropped MBJS file, converted in this tab: {origin.get('name', '')}"
    if kind == "served" and origin.get("name") == "default":
        return "the embedded default model (served by this server)"
    if kind == "served":
        return f"served by this server: {origin.get('name', '')}"
    return origin.get("name") or "unknown"


def describe(name, cfg, params, tok, report, origin, weights_format="f32", max_tokens=8192,
             gpu=None):
    """The card: {name, family, schedule, parameters, weights, gpu, tokenizer, context, source,
    facts: {...numbers...}}. `params`: the loaded parameter count (a tied head once);
    `weights_format`: the format the weights HAVE on the GPU; `gpu`: {format, gpu_bytes,
    narrow, tensors} counted from the loaded tensors."""
    tok_kind, tok_vocab, tok_text = tokenizer_facts(tok)
    family = f"{FAMILIES.get(cfg.model_type, cfg.model_type)} ({cfg.model_type})"
    return {
        "name": name,
        "family": family,
        "schedule": (f"{cfg.num_hidden_layers} layers: {schedule_text(cfg.layers)}"
                     f"{virtual_text(cfg)}; d_model {cfg.hidden_size}"),
        "parameters": f"{params_text(params)} ({params:,})",
        "weights": weight_text(report, weights_format),
        "gpu": gpu_text(gpu),
        "tokenizer": tok_text,
        "context": context_text(cfg, max_tokens),
        "source": source_text(origin),
        "facts": {"model_type": cfg.model_type, "layers": list(cfg.layers), "params": params,
                  "virtual_layers": list(cfg.virtual_layers or []),
                  "d_model": cfg.hidden_size, "vocab_size": cfg.vocab_size,
                  "weight_files": list(report.get("weight_files") or []),
                  "file_dtypes": list(report.get("file_dtypes") or []),
                  "tokenizer_kind": tok_kind, "tokenizer_vocab": tok_vocab,
                  "weights_format": weights_format,
                  "gpu_bytes": (gpu or {}).get("gpu_bytes"),
                  "gpu_bytes_by_format": dict(report.get("gpu_bytes_by_format") or {}),
                  "origin": dict(origin)},
    }
