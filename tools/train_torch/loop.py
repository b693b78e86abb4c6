"""The train-torch step loop: the tab's optimizer, schedule and data order on PyTorch.

Per optimizer step s (0-based):
  lr = py_engine.train.adamw.lr_at(s, lr, warmup, steps, min_lr_ratio)   the tab's one schedule
  K = accum micro-batches, each the tab's global micro-batch of B windows x T tokens; this
      rank's rows only (tools/train_torch/data.py states the rule); loss = mean next-token
      cross-entropy over the rows' B/W x (T-1) targets (f32, as transformers' causal-LM loss),
      backward of loss / K (gradients synced across ranks on the last micro-batch only)
  clip the global gradient norm to grad_clip (torch.nn.utils.clip_grad_norm_, the tab's rule);
  a non-finite norm skips the update and is counted, as the tab's AdamW gate does
  AdamW (betas, eps, decoupled weight decay only on the tensors py_engine.train.adamw.decays
      names: 2-D weights, never norms, conv, biases, A_log, D)
Settings and their defaults are the tab's (py_engine.train.session.train_config); a resumed
run takes its saved settings, and batch, seq_len, seed and accum cannot change (the data
order depends on them).

Progress: one JSON line per step on rank 0's stdout:
  {"step", "steps", "loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_rank",
   "world", "tokens", "elapsed_s", "epoch", "skipped"}
loss is the global batch's mean (averaged over ranks); tokens_per_s counts B x T x accum per
step over the step's wall time; per rank divides by the world size (one GPU per rank).
"""
import contextlib
import json
import math
import sys
import time

from py_engine.io.layouts import internal_name
from py_engine.train import checkpoint as tab_ckpt
from py_engine.train import data as tab_data
from py_engine.train.adamw import decays, lr_at
from py_engine.train.session import train_config
from tools.cmd_pretrain import read_corpus
from tools.train_torch import checkpoint as ckpt
from tools.train_torch import dist as dist_mod
from tools.train_torch import families
from tools.train_torch.data import RankBatches, encode

# CLI attribute -> the tab's train-config key
CLI_KEYS = {"steps": "steps", "batch": "batch", "seq_len": "seq_len", "lr": "lr",
            "warmup": "warmup", "weight_decay": "weight_decay", "grad_clip": "grad_clip",
            "grad_accum": "accum", "seed": "seed"}
FIXED_ON_RESUME = ("batch", "seq_len", "seed", "accum")


def settings(args, saved=None):
    """The run's train config: the tab's defaults (or the saved run's), CLI values on top."""
    spec = dict(saved or {})
    for attr, key in CLI_KEYS.items():
        v = getattr(args, attr, None)
        if v is not None:
            spec[key] = v
    t = train_config(spec)
    if saved is not None:
        for k in FIXED_ON_RESUME:
            if t[k] != saved.get(k):
                flag = {"accum": "--grad-accum", "seq_len": "--seq-len"}.get(k, "--" + k)
                raise ValueError(f"{flag} cannot change when resuming (the saved run used "
                                 f"{saved.get(k)!r}, now {t[k]!r}): the data order depends "
                                 "on it; start a new run to change it")
    return t


def log(d, msg):
    if d.main:
        print(msg, file=sys.stderr, flush=True)


def param_groups(named_params, t):
    """AdamW groups: weight decay on the tensors the tab decays, none on the rest."""
    dec = [p for n, p in named_params if decays(internal_name(n))]
    rest = [p for n, p in named_params if not decays(internal_name(n))]
    return [{"params": dec, "weight_decay": t["weight_decay"]},
            {"params": rest, "weight_decay": 0.0}]


def run(args):
    """The whole command (every rank runs it). ValueError = a user's mistake."""
    resume_dir = None
    if args.resume:
        resume_dir = ckpt.latest(args.out) if args.resume is True else args.resume
    start_dir = families.inspect_model_dir(resume_dir or args.model)
    meta = ckpt.read_meta(resume_dir) if resume_dir else None
    t = settings(args, meta["train"] if meta else None)
    tok_json = families.tokenizer_text(start_dir)
    texts, info = read_corpus(args.data)

    d = dist_mod.setup(args.device, need_group=args.fsdp)
    ok = False
    try:
        rc = _train(args, d, t, start_dir, resume_dir, meta, tok_json, texts, info)
        ok = True
        return rc
    finally:
        dist_mod.teardown(d, ok)


def _train(args, d, t, start_dir, resume_dir, meta, tok_json, texts, info):
    import torch
    skipped_files = info.get("skipped") or []
    if skipped_files:
        log(d, f"warning: skipped {len(skipped_files)} corpus file(s): "
               + "; ".join(map(str, skipped_files[:5])))
    inner = families.load_model(start_dir)
    vocab = inner.get_input_embeddings().weight.shape[0]
    _tok, ids = encode(texts, tok_json, vocab, str(start_dir.path / "tokenizer.json"))
    batches = RankBatches(ids, t["seq_len"], t["batch"], t["seed"], d.rank, d.world)
    digest = tab_data.ids_digest(ids)
    step, skipped, tokens, elapsed, history = 0, 0, 0, 0.0, []
    if meta:
        step, skipped = int(meta["step"]), int(meta.get("skipped", 0))
        tokens, elapsed = int(meta.get("tokens", 0)), float(meta.get("elapsed_s", 0.0))
        history = [list(p) for p in meta.get("history", [])]
        if meta["data"]["digest"] == digest:
            batches.restore(meta["data"]["position"])
        else:
            log(d, f"warning: this corpus differs from the one the state was trained on "
                   f"({digest[0]} tokens now, {meta['data']['digest'][0]} then): training "
                   "continues on it from its beginning")

    class_name = type(inner).__name__          # FSDP renames the class when it wraps
    model = dist_mod.wrap(inner, d, fsdp=args.fsdp)
    named = list(inner.named_parameters())
    opt = torch.optim.AdamW(param_groups(named, t), lr=t["lr"], betas=tuple(t["betas"]),
                            eps=t["eps"])
    if meta:
        ckpt.load_moments(resume_dir, opt, named, int(meta["adam_step"]))
    params = [p for _, p in named]
    n_params = sum(p.numel() for p in params)
    mode = "FSDP" if args.fsdp else ("DDP" if d.world > 1 else "one process")
    per_step = t["batch"] * t["seq_len"] * t["accum"]
    log(d, f"model: {class_name}, {n_params:,} parameters"
           f"{' (tied head)' if families.is_tied(inner) else ''}, vocab {vocab}; "
           f"{mode}, {d.world} x {d.device.type}, {args.dtype}; corpus {len(ids):,} tokens in "
           f"{batches.batcher.windows:,} windows; global batch {t['batch']} x {t['seq_len']} x "
           f"accum {t['accum']} = {per_step:,} tokens/step ({batches.per_rank} sequences per "
           f"rank); starting at step {step} of {t['steps']}")
    if step >= t["steps"]:
        log(d, f"nothing to do: the run is at step {step} of {t['steps']} (raise --steps)")
        return 0

    def state_meta():
        first = next((opt.state[p] for p in params if opt.state.get(p)), None)
        return {"step": step, "adam_step": int(first["step"]) if first else 0,
                "skipped": skipped, "tokens": tokens, "elapsed_s": elapsed, "train": t,
                "data": {"position": batches.position, "digest": digest}, "world": d.world,
                "dtype": args.dtype, "fsdp": bool(args.fsdp),
                "history": tab_ckpt.thin_history(history), "from": str(args.model)}

    def save(folder):
        ckpt.save(folder, d, inner, opt, named, tok_json, state_meta())

    amp = (torch.autocast(d.device.type, dtype=torch.bfloat16) if args.dtype == "bf16"
           else contextlib.nullcontext())
    model.train()
    while step < t["steps"]:
        t0 = time.perf_counter()
        lr = lr_at(step, t["lr"], t["warmup"], t["steps"], t["min_lr_ratio"])
        local, norm = one_step(model, batches, opt, params, t, lr, amp, d.device)
        if not math.isfinite(norm):
            skipped += 1
        loss_g = dist_mod.mean_across(d, float(local))
        dt = time.perf_counter() - t0
        step += 1
        tokens += per_step
        elapsed += dt
        if loss_g == loss_g:
            history.append([step, loss_g])
        if d.main:
            print(json.dumps({"step": step, "steps": t["steps"], "loss": loss_g, "lr": lr,
                              "grad_norm": norm, "tokens_per_s": round(per_step / dt, 1),
                              "tokens_per_s_per_rank": round(per_step / dt / d.world, 1),
                              "world": d.world, "tokens": tokens,
                              "elapsed_s": round(elapsed, 3), "epoch": batches.epoch,
                              "skipped": skipped}), flush=True)
        if args.save_every and step % args.save_every == 0 and step < t["steps"]:
            save(f"{args.out}/checkpoint-{step}")
            if d.main:
                ckpt.prune(args.out, args.keep)
            log(d, f"saved {args.out}/checkpoint-{step}")
    t0 = time.perf_counter()
    save(args.out)
    log(d, f"wrote {args.out} (HF folder + {ckpt.STATE_FILE}) at step {step} in "
           f"{time.perf_counter() - t0:.1f} s")
    return 0


def one_step(model, batches, opt, params, t, lr, amp, device):
    """One optimizer step over t["accum"] micro-batches of this rank's rows.

    Returns (this rank's mean loss as a 0-d tensor, the global gradient norm before clipping).
    Gradients are reduced across ranks on the last micro-batch only (DDP no_sync / FSDP's
    requires_gradient_sync); a non-finite norm leaves the weights and moments untouched (the
    tab's gate; unlike the tab, torch's AdamW step counter does not advance then)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    is_ddp = isinstance(model, DistributedDataParallel)
    is_fsdp = hasattr(model, "set_requires_gradient_sync")
    opt.zero_grad(set_to_none=True)
    local = torch.zeros((), dtype=torch.float32, device=device)
    for k in range(t["accum"]):
        x = batches.next(device)                               # [B/W, T]
        last = k == t["accum"] - 1
        if is_fsdp:
            model.set_requires_gradient_sync(last)
        sync = model.no_sync() if is_ddp and not last else contextlib.nullcontext()
        with sync:
            with amp:
                logits = model(input_ids=x).logits             # [B/W, T, V]
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   x[:, 1:].reshape(-1))       # mean over B/W x (T-1)
            (loss / t["accum"]).backward()
        local += loss.detach() / t["accum"]
    max_norm = t["grad_clip"] if t["grad_clip"] > 0 else float("inf")
    norm = float(dist_mod.full(torch.nn.utils.clip_grad_norm_(params, max_norm)))
    if math.isfinite(norm):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
    return local, norm
