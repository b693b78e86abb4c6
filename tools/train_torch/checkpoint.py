"""Checkpoints of a train-torch run: an HF model folder the tab and transformers load as it
is, plus the optimizer/step state that `--resume` needs.

A checkpoint folder holds
  config.json, model.safetensors (f32), generation_config.json   transformers' save_pretrained
  tokenizer.json                                                  the model's, copied unchanged
  torch_train_state.safetensors                                   for --resume:
     optimizer.exp_avg/<param name>, optimizer.exp_avg_sq/<param name>   F32, full (unsharded)
     __metadata__ "mambaweb.torch_state": JSON {version, step, adam_step, skipped, tokens,
        elapsed_s, train (settings), data {position, digest}, world, history}
The state is independent of the number of processes and of DDP vs FSDP (moments are stored
whole, by parameter name), so a run may resume on a different world size.

Where: OUT/checkpoint-<step>/ every --save-every steps (the newest --keep kept), and OUT/ itself
at the end. config.json says tie_word_embeddings only when the head really is the embedding
tensor: transformers 5.x trains NemotronH's head apart from its embedding even when its config
says tied, and the tab must then read the head it trained.
"""
import json
import shutil
from pathlib import Path

from tools.train_torch import dist as dist_mod

STATE_FILE = "torch_train_state.safetensors"
STATE_KEY = "mambaweb.torch_state"
STATE_VERSION = 1
M_PREFIX = "optimizer.exp_avg/"
V_PREFIX = "optimizer.exp_avg_sq/"


def _tied_duplicates(inner):
    """State-dict keys that repeat an earlier key's tensor (a tied head): saved once."""
    seen, dup = {}, set()
    for k, v in inner.state_dict(keep_vars=True).items():
        if id(v) in seen:
            dup.add(k)
        seen.setdefault(id(v), k)
    return dup


def save(folder, d, inner, opt, named_params, tokenizer_json, meta):
    """Write a checkpoint folder (rank 0 writes; every rank gathers: call on all ranks)."""
    import torch
    from safetensors.torch import save_file
    from tools.train_torch.families import is_tied

    skip = _tied_duplicates(inner)
    weights = {}
    for k, v in inner.state_dict().items():          # same order on every rank
        full = dist_mod.full(v).detach()
        if d.main and k not in skip:
            weights[k] = full.to("cpu", torch.float32).contiguous()
    moments = {}
    for name, p in named_params:
        st = opt.state.get(p)
        if not st:
            continue
        for prefix, key in ((M_PREFIX, "exp_avg"), (V_PREFIX, "exp_avg_sq")):
            full = dist_mod.full(st[key]).detach()
            if d.main:
                moments[prefix + name] = full.to("cpu", torch.float32).contiguous()
    if d.main:
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tied = is_tied(inner)
        old = (inner.config.tie_word_embeddings, inner.config.use_cache)
        inner.config.tie_word_embeddings, inner.config.use_cache = tied, True
        try:
            inner.save_pretrained(str(tmp), state_dict=weights)
        finally:
            inner.config.tie_word_embeddings, inner.config.use_cache = old
        _force_config(tmp / "config.json", tied)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        meta = dict(meta, version=STATE_VERSION)
        save_file(moments, str(tmp / STATE_FILE),
                  metadata={"format": "pt", STATE_KEY: json.dumps(meta)})
        _replace_files(tmp, folder)
    dist_mod.barrier(d)


def _force_config(path, tied):
    """config.json as the tab's exports write it: f32, tie only when tied, and
    rescale_prenorm_residual false (transformers 5.x would rescale loaded weights)."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tie_word_embeddings"] = bool(tied)
    cfg["dtype"] = "float32"
    if "rescale_prenorm_residual" in cfg:
        cfg["rescale_prenorm_residual"] = False
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _replace_files(tmp, folder):
    """Move tmp's files into folder (each replace is atomic), dropping stale weight files
    (a smaller model's shards) so the folder holds one model."""
    folder.mkdir(parents=True, exist_ok=True)
    new = {f.name for f in tmp.iterdir()}
    for f in folder.iterdir():
        if f.is_file() and f.name not in new and (f.name.endswith(".safetensors")
                                                 or f.name == "model.safetensors.index.json"):
            f.unlink()
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()


def prune(out, keep):
    """Keep the newest `keep` OUT/checkpoint-<step> folders (keep 0: all)."""
    if keep <= 0:
        return
    found = sorted(_step_folders(Path(out)), key=lambda p: p[0])
    for _, p in found[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _step_folders(out):
    for p in out.glob("checkpoint-*"):
        tail = p.name[len("checkpoint-"):]
        if p.is_dir() and tail.isdigit() and (p / STATE_FILE).is_file():
            yield int(tail), p


def read_meta(folder):
    """The state's metadata dict, or ValueError naming the file."""
    from safetensors import safe_open
    f = Path(folder) / STATE_FILE
    if not f.is_file():
        raise ValueError(f"{folder}: no {STATE_FILE}; --resume continues from a folder "
                         "train-torch wrote (OUT or OUT/checkpoint-<step>)")
    with safe_open(str(f), "pt") as st:
        raw = (st.metadata() or {}).get(STATE_KEY)
    if raw is None:
        raise ValueError(f"{f} has no '{STATE_KEY}' metadata: not a train-torch state")
    meta = json.loads(raw)
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"{f}: state version {meta.get('version')} is not supported (this "
                         f"tool reads version {STATE_VERSION})")
    return meta


def latest(out):
    """The folder with the newest state among OUT and OUT/checkpoint-*, or ValueError."""
    out = Path(out)
    cands = [(s, p) for s, p in _step_folders(out)]
    if (out / STATE_FILE).is_file():
        cands.append((int(read_meta(out)["step"]), out))
    if not cands:
        raise ValueError(f"--resume: {out} holds no {STATE_FILE} (neither in it nor in "
                         "checkpoint-<step>/): start without --resume, or name the folder")
    return max(cands, key=lambda c: c[0])[1]


def load_moments(folder, opt, named_params, adam_step):
    """Put the saved AdamW moments into `opt` (sharded like each parameter under FSDP)."""
    import torch
    from safetensors import safe_open
    f = Path(folder) / STATE_FILE
    with safe_open(str(f), "pt", device="cpu") as st:
        keys = set(st.keys())
        for name, p in named_params:
            if M_PREFIX + name not in keys:
                raise ValueError(f"{f} has no optimizer moment for {name}: was it saved from "
                                 "a different model?")
            m, v = st.get_tensor(M_PREFIX + name), st.get_tensor(V_PREFIX + name)
            if tuple(m.shape) != tuple(p.shape):    # a DTensor's shape is the full one
                raise ValueError(f"{f}: moment of {name} has shape {tuple(m.shape)}, the "
                                 f"model's parameter {tuple(p.shape)}")
            opt.state[p] = {"step": torch.tensor(float(adam_step), dtype=torch.float32),
                            "exp_avg": dist_mod.like(p, m), "exp_avg_sq": dist_mod.like(p, v)}
