"""What the three parity-fixture generators share (tools/make_fixtures.py: Mamba-1 / Falcon-Mamba,
tools/make_mamba2_fixtures.py: Mamba-2, tools/make_hybrid_fixtures.py: NemotronH).

Every function here is deterministic: seeded numpy / torch, npz and json written without timestamps,
so a generator re-run gives byte-identical files (same torch / transformers versions). torch and
transformers are imported inside the functions: importing this module needs numpy only.

  save_npz(path, arrays)                  np.savez without wall-clock timestamps
  write_json(path, obj)                   indent 2, key order kept, trailing newline
  fresh_dir(folder)                       remove folder if it exists (a generator rewrites whole folders)
  seeded_model(model_cls, cfg, seed)     model_cls(cfg) after torch.manual_seed(seed), and its rn(t, scale) noise
  dtype_variants(out, name, model, sfx)   models/<name><sfx>/ = model rounded to f32 / bf16 / f16, saved
  greedy(model, ids, n_new, mask)         HF greedy generate: new ids int64 [n_new], logits f32 [n_new, V]
  check_greedy(new, glog, logits, n_new)  the continuation is the argmax of its logits, glog[0] == logits[-1]
  find_prompt(folder, seed, V, P, run)    seeded prompt retries until every greedy top-1/top-2 gap >= MIN_GAP
  stepwise_logits(model, ids)             the prompt one token at a time through the cache (decode path)
  counted_loss(model, ids, labels, mm, n) training forward asserting the torch chunked scan ran n times
  write_train_fixture(out, name, ...)     train/<name>/: f32 params + batch, loss, grads, 5 AdamW steps
  write_train_set(out, models, seed0,...) write_train_fixture for every (name, *build args) entry
  assert_torch_path(mm)                   no mamba_ssm / causal_conv1d, Hub kernels off: transformers' torch code
  run_cli(argv, description, write_all)   the generators' main(): --out, torch settings, size report
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

N_NEW = 16          # greedy tokens generated after every prompt
MIN_GAP = 1e-3      # smallest top-1/top-2 logit gap allowed at a greedy step (choices not rounding-decided)
MAX_FILE = 300 * 1024

# weight decay 0.1 on parameters whose name ends with one of these (Mamba-1's list; Mamba-2 has no
# x_proj / dt_proj, so the same list decays exactly its matrices); 0 on everything else
MAMBA_DECAY_SUFFIXES = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "x_proj.weight",
                        "dt_proj.weight", "out_proj.weight")
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
ADAMW_STEPS = 5


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez without the wall-clock timestamps: sorted members, fixed date, stored."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def fresh_dir(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def seeded_model(model_cls, cfg, seed):
    """model_cls(cfg) in eval mode, initialised right after torch.manual_seed(seed), and rn(t, scale):
    N(0, scale^2) float32 noise of t's shape from its own generator seeded seed + 1 (the perturbations a
    generator applies do not shift the init draws)."""
    import torch
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)

    def rn(t, scale):
        return torch.randn(t.shape, generator=g, dtype=torch.float32) * scale

    return model, rn


def dtype_of(suffix: str):
    import torch
    return {"": torch.float32, "-bf16": torch.bfloat16, "-f16": torch.float16}[suffix]


def dtype_variants(out: Path, name: str, model, suffixes):
    """For each suffix ("", "-bf16", "-f16"): save a copy of model rounded to that dtype as the HF folder
    models/<name><suffix>/ (model.to(dtype).save_pretrained) and yield (suffix, dtype, folder)."""
    for suffix in suffixes:
        dtype = dtype_of(suffix)
        folder = out / "models" / (name + suffix)
        fresh_dir(folder)
        copy.deepcopy(model).to(dtype).save_pretrained(folder)
        yield suffix, dtype, folder


def greedy(model, ids, n_new=N_NEW, mask=False):
    """generate(do_sample=False, use_cache=True), no EOS stop. ids [1, P] -> (the n_new new ids int64,
    the logits each was the argmax of, f32 [n_new, V]). mask: pass an explicit all-ones attention_mask
    (otherwise generate() derives one from ids != pad_token_id (0); NemotronH's mixers then zero those
    prompt positions as padding). Call under torch.no_grad() (generate() runs without grad anyway)."""
    import torch
    from transformers import GenerationConfig
    gc = GenerationConfig(max_new_tokens=n_new, min_new_tokens=0, do_sample=False, use_cache=True,
                          eos_token_id=None, pad_token_id=0, bos_token_id=None,
                          output_logits=True, return_dict_in_generate=True)
    kw = dict(attention_mask=torch.ones_like(ids)) if mask else {}
    gen = model.generate(ids, generation_config=gc, **kw)
    new = gen.sequences[0, ids.shape[1]:].numpy().astype(np.int64)
    return new, torch.stack(gen.logits, 0)[:, 0].numpy().astype(np.float32)


def check_greedy(new, glog, logits, n_new=N_NEW):
    """new [n_new] is the argmax of glog [n_new, V]; glog[0] is the prompt's last logits row."""
    assert len(new) == n_new, "generation stopped early"
    assert (np.argmax(glog, -1) == new).all()
    assert np.abs(glog[0] - logits[-1]).max() < 1e-5


def min_top2_gap(glog) -> float:
    top2 = np.sort(glog, axis=-1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).min())


def find_prompt(folder, seed, V, prompt_len, run):
    """Seeded retries (RandomState(seed * 1000 + attempt)) of a prompt int64 [prompt_len] in [0, V):
    run(prompt) returns (exp, ...) with exp["greedy_logits"]; the first whose every greedy step has a
    top-1/top-2 gap >= MIN_GAP is kept. Returns (run's result, gap, attempt)."""
    for attempt in range(50):
        rng = np.random.RandomState(seed * 1000 + attempt)
        prompt = rng.randint(0, V, size=prompt_len).astype(np.int64)
        res = run(prompt)
        gap = min_top2_gap(res[0]["greedy_logits"])
        if gap >= MIN_GAP:
            return res, gap, attempt
    raise RuntimeError(f"{folder}: no prompt with greedy gap >= {MIN_GAP}")


def stepwise_logits(model, ids):
    """Feed ids [1, T] one token at a time through the cache: token 0 takes the chunked path on an empty
    cache, the rest the 1-token decode path. Returns logits f32 [T, V] and the final cache."""
    import torch
    out = model(ids[:, :1], use_cache=True)
    rows, cache = [out.logits[0, -1]], out.cache
    for t in range(1, ids.shape[1]):
        out = model(ids[:, t:t + 1], cache=cache, use_cache=True)
        rows.append(out.logits[0, -1])
    return torch.stack(rows).numpy().astype(np.float32), cache


def counted_loss(model, tids, tlab, mm, n_calls):
    """Training forward's loss, asserting that mm.mamba2_chunk_scan (the torch chunked scan) ran n_calls
    times: the fused mamba_ssm entry point must have fallen through to it."""
    orig, calls = mm.mamba2_chunk_scan, []
    mm.mamba2_chunk_scan = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    try:
        loss = model(input_ids=tids, labels=tlab, use_cache=False).loss
    finally:
        mm.mamba2_chunk_scan = orig
    assert len(calls) == n_calls, "training took a fused path"
    return loss


def write_train_fixture(out: Path, name: str, model, seed: int, shape, decay_suffixes, first_loss=None):
    """train/<name>/: model's initial params (save_pretrained, f32) + expected.npz with
    input_ids / labels int64 shape (RandomState(seed), labels[1, 5] = -100), loss f32 [], grad.<name> f32,
    adamw_losses f32 [5] and adamw.<name> f32 after 5 torch AdamW steps (ADAMW; weight decay 0.1 on the
    names ending with decay_suffixes, 0 on the rest). first_loss(model, ids, labels): the first forward
    (default: the plain one). Returns (folder, expected arrays, the 5 losses)."""
    import torch
    folder = out / "train" / name
    fresh_dir(folder)
    model.save_pretrained(folder)
    V = model.config.vocab_size
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, V, size=shape).astype(np.int64)
    labels = ids.copy()
    labels[1, 5] = -100
    model.train()
    tids, tlab = torch.from_numpy(ids), torch.from_numpy(labels)
    res = dict(input_ids=ids, labels=labels)
    model.zero_grad()
    if first_loss is None:
        loss = model(input_ids=tids, labels=tlab, use_cache=False).loss
    else:
        loss = first_loss(model, tids, tlab)
    loss.backward()
    res["loss"] = np.float32(loss.item())
    for k, p in model.named_parameters():
        res["grad." + k] = p.grad.detach().numpy().astype(np.float32).copy()
    decay = [p for k, p in model.named_parameters() if k.endswith(decay_suffixes)]
    no_decay = [p for k, p in model.named_parameters() if not k.endswith(decay_suffixes)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            **ADAMW)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = model(input_ids=tids, labels=tlab, use_cache=False).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    res["adamw_losses"] = np.array(losses, dtype=np.float32)
    for k, p in model.named_parameters():
        res["adamw." + k] = p.detach().numpy().astype(np.float32).copy()
    save_npz(folder / "expected.npz", res)
    return folder, res, losses


def write_train_set(out: Path, models, seed0: int, build, shape, decay_suffixes, first_loss=None, check=None):
    """write_train_fixture for entry idx = (name, *args) of models: model build(*args, seed), seed =
    seed0 + 31 * idx; check(model, res) asserts on the result. Returns [(folder, note)]."""
    written = []
    for idx, (name, *args) in enumerate(models):
        seed = seed0 + 31 * idx
        model = build(*args, seed)
        folder, res, losses = write_train_fixture(out, name, model, seed, shape, decay_suffixes, first_loss)
        if check is not None:
            check(model, res)
        written.append((folder, f"loss {res['loss']:.6f}, after 5 AdamW steps {losses[-1]:.6f}"))
    return written


def assert_torch_path(mm):
    """mamba_ssm / causal_conv1d absent, Hub kernels switched off, and the module's fused entry point is
    transformers' stub returning None: every kernel hook falls back to transformers' torch code.
    transformers >= 5.25 depends on `kernels` (the Hub kernel loader), so it is installed; it swaps in a
    Hub kernel only where a model is kernelized, which USE_HUB_KERNELS=NO (set by run_cli) refuses."""
    import importlib.util
    import torch
    from transformers.integrations import hub_kernels
    for pkg in ("mamba_ssm", "causal_conv1d"):
        assert importlib.util.find_spec(pkg) is None, f"{pkg} installed: fixtures would not use the torch path"
    enabled = getattr(hub_kernels, "_kernels_enabled", None)
    assert importlib.util.find_spec("kernels") is None or (enabled is not None and not enabled()), \
        "Hub kernels enabled: set USE_HUB_KERNELS=NO"
    assert mm.mamba2_split_conv1d_scan_combined(torch.zeros(1, 1, 1), torch.zeros(1, 1), None, None, None,
                                                D=None, chunk_size=1) is None


def run_cli(argv, description: str, write_all, checks=None) -> int:
    """A generator's main(): --out (default tests/fixtures), one deterministic torch thread, quiet
    transformers, checks(), then write_all(out) -> [(folder, note)]; files made 0644 and < 300 KiB."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    os.environ["USE_HUB_KERNELS"] = "NO"       # transformers' torch code only (assert_torch_path)
    import torch
    import transformers
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    if checks is not None:
        checks()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_all(out)
    total = 0
    for folder, note in written:
        for f in folder.iterdir():
            f.chmod(0o644)      # save_pretrained writes safetensors 0600
        size = sum(f.stat().st_size for f in folder.iterdir())
        biggest = max(f.stat().st_size for f in folder.iterdir())
        assert biggest < MAX_FILE, (folder, biggest)
        total += size
        print(f"{folder.relative_to(out.parent) if out.parent in folder.parents else folder}  "
              f"{size / 1024:7.1f} KiB  {note}")
    print(f"total {total / 1024:.1f} KiB in {len(written)} folders under {out}")
    return 0
