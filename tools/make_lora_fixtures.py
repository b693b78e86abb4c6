"""Build the LoRA reference fixtures with transformers + PEFT (CPU, f32, transformers' torch path).

    .venv/bin/python tools/make_lora_fixtures.py [--out tests/fixtures]

Each base model is a training fixture of tools/make_fixtures.py / make_mamba2_fixtures.py /
make_hybrid_fixtures.py (read from the repo's tests/fixtures/train/<base>/, never rewritten here):

  lora/mamba-d24-untied/        Mamba-1,  targets in_proj, out_proj                       (2 layers:  4 LoRA modules)
  lora/mamba2-g2-untied/        Mamba-2,  targets in_proj, out_proj                       (2 layers:  4 LoRA modules)
  lora/nemotronh-mamf-untied/   NemotronH "M*-M", targets in_proj, out_proj, q/k/v/o_proj,
                                up_proj, down_proj                                        (4 layers: 10 LoRA modules)

and in every one of them:

  adapter/            PeftModel.save_pretrained output, untouched: adapter_config.json, adapter_model.safetensors
                      (f32), README.md (PEFT's model card). LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM", target_modules as above); base_model_name_or_path is
                      the repo-relative "tests/fixtures/train/<base>". BOTH lora_A and lora_B are seeded random
                      (PEFT's default B = 0 would make the adapter a no-op and A's gradient vanish):
                        A ~ N(0, 1/in)          B ~ N(0, (REL * std(W) * sqrt(in) / (scaling * sqrt(r)))^2)
                      so that std(scaling * B @ A) ~ REL * std(W) (REL = 0.03) for each targeted weight W.
  expected.npz        (all f32 unless said)
                        prompt_ids    int64 [P]      seeded prompt, P = 12
                        logits        [P, V]         PeftModel(prompt) (base + adapter), every position
                        base_logits   [P, V]         the same with the adapter disabled (pm.disable_adapter())
                        loss          []             training forward of the PeftModel on the base training
                                                     fixture's input_ids / labels (its expected.npz; HF's causal-LM
                                                     loss: shift by one, mean over labels != -100), model.train()
                        grad.<name>   shape of <name> d loss / d <name> for every lora_A / lora_B tensor
                        adamw_losses  [5]            loss before each of 5 torch.optim.AdamW steps over ONLY the
                                                     adapter tensors (the base stays frozen): lr 1e-2, betas
                                                     (0.9, 0.95), eps 1e-8, weight_decay 0.1 on every lora_A /
                                                     lora_B (they are all 2-D: the train fixtures' rule "decay the
                                                     matrices") -- tools/fixture_common.ADAMW
                        adamw.<name>  shape of <name> every adapter tensor after the 5 steps
                        merged.<hf>   [out, in]      the base weights merge_and_unload() changes, W + scaling * B @ A,
                                                     under their names in the base's model.safetensors
  fixture.json        base folder, r / alpha / scaling, targets, and lora_modules: PEFT module prefix -> the base
                      weight it adapts (the key of model.safetensors and of merged.*)

  lora/mamba2-g2-untied/adapter_default/   one more adapter with PEFT's DEFAULT init (A kaiming-uniform,
                      B = 0) made by stock PEFT (no patch, see below): target_modules ["in_proj"]; its logits are
                      exactly base_logits.

Tensor names (PEFT 0.21.2 on transformers 5.24 and 5.25):
  * in memory: base_model.model.<module>.lora_A.default.weight; adapter_model.safetensors DROPS the adapter
    name: base_model.model.<module>.lora_A.weight [r, in] and base_model.model.<module>.lora_B.weight [out, r].
    <name> in grad.* / adamw.* is that saved name.
  * <module> is the in-memory module path: backbone.layers.<i>.mixer.in_proj for Mamba-1/-2, but
    model.layers.<i>.mixer.in_proj (attention: .mixer.q_proj ..., MLP: .mixer.up_proj ...) for NemotronH, whose
    checkpoint names are backbone.* (transformers renames on load; PEFT saves the in-memory names). So the
    NemotronH adapter holds base_model.model.model.layers.0.mixer.in_proj.lora_A.weight while the weight it
    adapts is backbone.layers.0.mixer.in_proj.weight on disk. (Adapters made with older transformers, whose
    NemotronH module was .backbone, say base_model.model.backbone.layers...: a loader should accept both.)
  * forward of an adapted Linear: y = W x + b + scaling * B (A x), scaling = lora_alpha / r = 2.

out_proj: PEFT refuses LoRA on out_proj / conv1d of model types mamba, mamba2, nemotron_h, falcon_mamba,
falcon_h1 (peft.tuners.tuners_utils._check_lora_target_modules_mamba) because the CUDA fused kernels
(mamba_ssm) read out_proj.weight directly, bypassing the LoRA wrapper. On transformers' torch path (these
fixtures; our engine) out_proj is a plain nn.Linear call, so LoRA on it is well defined: the adapters above are
made -- and must be loaded by PEFT -- with that check disabled (allow_out_proj() below). Asserted here: the
merged model's logits equal the PeftModel's, i.e. the adapter took effect everywhere it is stored. Stock PEFT
raises on loading adapter/ for these model types; adapter_default/ is what stock PEFT makes and loads.

Deterministic: seeded generators, one torch thread, target_modules written sorted (PEFT keeps them in a set,
whose order varies per process), npz with fixed zip timestamps; a re-run gives byte-identical files.
Conditioned: the AdamW results are asserted stable under 1e-5 relative gradient noise (check_conditioning), so
that the thread count or an f32 engine's rounding does not decide them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script: tools.* from the repo root
from tools.fixture_common import (ADAMW, ADAMW_STEPS, MAX_FILE, REPO, counted_loss, fresh_dir,  # noqa: E402
                                  save_npz, write_json)

TRAIN_DIR = REPO / "tests" / "fixtures" / "train"
R, ALPHA = 4, 8
SCALING = ALPHA / R
REL = 0.03              # std of scaling * B @ A relative to std of the adapted W
PROMPT_LEN = 12
WEIGHT_DECAY = 0.1      # on every adapter tensor (all 2-D)
MIN_EFFECT = 1e-2       # the adapter must move some logit at least this much ...
MAX_EFFECT = 0.25       # ... and no logit by more than this fraction of the base logits' range

MAMBA_TARGETS = ["in_proj", "out_proj"]
NEMOTRON_TARGETS = ["in_proj", "out_proj", "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = ["in_proj"]       # the adapter_default one: what stock PEFT accepts for Mamba-2

# base training fixture, targets, transformers module whose torch chunked scan the training forward must use
BASES = [
    ("mamba-d24-untied", MAMBA_TARGETS, None),
    ("mamba2-g2-untied", MAMBA_TARGETS, "transformers.models.mamba2.modeling_mamba2"),
    ("nemotronh-mamf-untied", NEMOTRON_TARGETS, "transformers.models.nemotron_h.modeling_nemotron_h"),
]
DEFAULT_ADAPTER_BASE = "mamba2-g2-untied"


@contextlib.contextmanager
def allow_out_proj():
    """Disable PEFT's "out_proj is incompatible with Mamba-based models" check while injecting / loading."""
    import peft.tuners.tuners_utils as tu
    orig = tu._check_lora_target_modules_mamba
    tu._check_lora_target_modules_mamba = lambda *a, **k: None
    try:
        yield
    finally:
        tu._check_lora_target_modules_mamba = orig


def lora_config(targets):
    from peft import LoraConfig
    return LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=list(targets))


def load_base(base):
    """The training fixture's model (f32, eval), named by its repo-relative folder (-> base_model_name_or_path)."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(TRAIN_DIR / base, dtype=torch.float32).eval()
    # PEFT's base_model_name_or_path = model.__dict__["name_or_path"] (the absolute folder): make it repo-relative
    model.name_or_path = model.config._name_or_path = f"tests/fixtures/train/{base}"
    return model


def saved_name(k: str) -> str:
    """In-memory PEFT parameter name -> its adapter_model.safetensors key (adapter name dropped)."""
    assert ".default." in k, k
    return k.replace(".default.", ".")


def adapter_params(pm):
    return {saved_name(k): p for k, p in pm.named_parameters() if "lora_" in k}


def lora_modules(pm):
    """{module path without the base_model.model. prefix: peft.tuners.lora.Linear}, model order."""
    from peft.tuners.lora import Linear
    return {k[len("base_model.model."):]: m for k, m in pm.named_modules() if isinstance(m, Linear)}


def randomize(pm, seed):
    """Seeded N(0, .) lora_A / lora_B (see the module docstring for the scales)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(pm).values():
            A, B, W = m.lora_A["default"].weight, m.lora_B["default"].weight, m.base_layer.weight
            fan_in = A.shape[1]
            A.copy_(torch.randn(A.shape, generator=g) / fan_in ** 0.5)
            sb = REL * W.std().item() * fan_in ** 0.5 / (SCALING * R ** 0.5)
            B.copy_(torch.randn(B.shape, generator=g) * sb)


def save_adapter(pm, folder):
    pm.peft_config["default"].target_modules = sorted(pm.peft_config["default"].target_modules)
    pm.save_pretrained(folder)


def logits_of(model, prompt):
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(prompt)[None], use_cache=False).logits[0].numpy().astype(np.float32)


def hf_names(pm, base):
    """{PEFT module prefix (as in the saved keys): base model.safetensors key of the weight it adapts}.
    The on-disk name is matched on everything after the first path component (backbone. / model.)."""
    from safetensors import safe_open
    with safe_open(TRAIN_DIR / base / "model.safetensors", "pt") as f:
        disk = list(f.keys())
    out = {}
    for mod in lora_modules(pm):
        tail = mod.split(".", 1)[1] + ".weight"
        hits = [k for k in disk if k.split(".", 1)[1] == tail]
        assert len(hits) == 1, (mod, hits)
        out["base_model.model." + mod] = hits[0]
    return out


def merged_weights(pm, base, prompt, logits):
    """merge_and_unload on a copy: {hf name: merged W} for every base tensor that changed (asserted: exactly the
    adapted weights), and the merged model reproduces the PeftModel's logits."""
    import torch
    from safetensors.torch import load_file
    merged = copy.deepcopy(pm).merge_and_unload()
    mlog = logits_of(merged, prompt)
    assert np.abs(mlog - logits).max() < 1e-4 * max(1.0, np.abs(logits).max()), np.abs(mlog - logits).max()
    with tempfile.TemporaryDirectory() as d:
        merged.save_pretrained(d)
        new = load_file(Path(d) / "model.safetensors")
    old = load_file(TRAIN_DIR / base / "model.safetensors")
    assert new.keys() == old.keys()
    changed = {k: new[k].numpy().astype(np.float32) for k in sorted(new) if not torch.equal(new[k], old[k])}
    assert set(changed) == set(hf_names(pm, base).values()), sorted(changed)
    return changed


def train(pm, exp, mm_name, noise=0.0, seed=0):
    """loss + grads of the first training forward, then 5 AdamW steps over the adapter tensors only (each
    step's gradient elements scaled by 1 + noise * N(0, 1) when noise: check_conditioning)."""
    import importlib
    import torch
    ids, labels = torch.from_numpy(exp["input_ids"]), torch.from_numpy(exp["labels"])
    params = adapter_params(pm)
    assert all(p.requires_grad for p in params.values())
    assert all(not p.requires_grad for k, p in pm.named_parameters() if "lora_" not in k)
    pm.train()
    pm.zero_grad()
    if mm_name is None:
        loss = pm(input_ids=ids, labels=labels, use_cache=False).loss
    else:      # the fused entry point must fall through to the torch chunked scan, once per Mamba layer
        n = sum(1 for m in pm.modules() if type(m).__name__.endswith("Mixer") and hasattr(m, "A_log"))
        loss = counted_loss(pm, ids, labels, importlib.import_module(mm_name), n)
    loss.backward()
    res = {"loss": np.float32(loss.item())}
    for k, p in params.items():
        res["grad." + k] = p.grad.detach().numpy().astype(np.float32).copy()
        assert np.abs(res["grad." + k]).max() > 0, k
    opt = torch.optim.AdamW(list(params.values()), weight_decay=WEIGHT_DECAY, **ADAMW)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = pm(input_ids=ids, labels=labels, use_cache=False).loss
        losses.append(loss.item())
        loss.backward()
        if noise:
            for p in params.values():
                p.grad.mul_(1 + noise * torch.randn(p.shape, generator=gen))
        opt.step()
    res["adamw_losses"] = np.array(losses, dtype=np.float32)
    for k, p in params.items():
        res["adamw." + k] = p.detach().numpy().astype(np.float32).copy()
    pm.eval()
    return res, losses


def write_one(out: Path, idx: int, base: str, targets, mm_name):
    import torch
    from peft import get_peft_model
    seed = 7001 + 31 * idx
    folder = out / "lora" / base
    fresh_dir(folder)
    folder.mkdir(parents=True)
    exp = np.load(TRAIN_DIR / base / "expected.npz")
    model = load_base(base)
    V = model.config.vocab_size
    prompt = np.random.RandomState(seed).randint(0, V, size=PROMPT_LEN).astype(np.int64)
    torch.manual_seed(seed)
    with allow_out_proj():
        pm = get_peft_model(model, lora_config(targets))
    randomize(pm, seed + 1)
    save_adapter(pm, folder / "adapter")
    pm.eval()
    logits = logits_of(pm, prompt)
    with pm.disable_adapter():
        base_logits = logits_of(pm, prompt)
    effect = float(np.abs(logits - base_logits).max())
    spread = float(base_logits.max() - base_logits.min())
    assert MIN_EFFECT <= effect <= MAX_EFFECT * spread, (effect, spread)
    names = hf_names(pm, base)
    merged = merged_weights(pm, base, prompt, logits)
    with pm.disable_adapter():       # the base alone reproduces its training fixture's loss (same convention)
        pm.train()
        base_loss = pm(input_ids=torch.from_numpy(exp["input_ids"]), labels=torch.from_numpy(exp["labels"]),
                       use_cache=False).loss.item()
        pm.eval()
    assert abs(base_loss - float(exp["loss"])) < 1e-5, (base_loss, float(exp["loss"]))
    start = copy.deepcopy(pm)
    res, losses = train(pm, exp, mm_name)
    conditioning = check_conditioning(start, exp, mm_name, res)
    arrays = dict(prompt_ids=prompt, logits=logits, base_logits=base_logits, **res)
    arrays.update({"merged." + k: v for k, v in merged.items()})
    save_npz(folder / "expected.npz", arrays)
    info = dict(base=f"train/{base}", adapter="adapter", r=R, lora_alpha=ALPHA, scaling=SCALING,
                target_modules=sorted(targets), prompt_len=PROMPT_LEN,
                saved_names="base_model.model.<module>.lora_A.weight [r, in], .lora_B.weight [out, r] "
                            "(adapter name 'default' dropped); <module> is the in-memory path",
                lora_modules=names,
                adamw=dict(lr=ADAMW["lr"], betas=list(ADAMW["betas"]), eps=ADAMW["eps"], weight_decay=WEIGHT_DECAY,
                           steps=ADAMW_STEPS, params="every lora_A / lora_B (all 2-D), base frozen"),
                peft_out_proj_check="disabled to make / load adapter/ (see tools/make_lora_fixtures.py)")
    written = [(folder / "adapter", f"{len(names)} LoRA modules")]
    if base == DEFAULT_ADAPTER_BASE:
        written.append(write_default(folder, seed + 2, prompt, base_logits))
        info["adapter_default"] = dict(adapter="adapter_default", target_modules=DEFAULT_TARGETS,
                                       init="PEFT default (A kaiming-uniform, B = 0): logits == base_logits")
    write_json(folder / "fixture.json", info)
    note = (f"adapter moves logits by {effect:.3f} (base range {spread:.1f}), loss {res['loss']:.6f} "
            f"(base {base_loss:.6f}), after 5 AdamW steps {losses[-1]:.6f}, {conditioning}")
    return [(folder, note)] + written


def check_conditioning(start, exp, mm_name, res, noise=1e-5, seeds=4, bound=5e-6):
    """The 5 AdamW steps rerun from `start` (a copy of the PeftModel before training) with every gradient
    element scaled by 1 + noise * N(0, 1) -- about what another f32 engine, or torch on another thread
    count, gives -- must keep the losses and the adapter tensors within `bound` relative (half of
    tests/unit/test_lora_fixtures.py's 1e-5) and every tensor's median element within bound / 10 (half of
    tests/browser/test_lora.py's 1e-6): the expected values must not be decided by rounding (an
    Adam trajectory whose gradients cancel across steps amplifies 1e-5 past that). Returns a note."""
    worst_loss = worst_rel = worst_med = 0.0
    for seed in range(seeds):
        got, _ = train(copy.deepcopy(start), exp, mm_name, noise=noise, seed=seed)
        worst_loss = max(worst_loss, float(np.max(np.abs(got["adamw_losses"] - res["adamw_losses"])
                                                  / np.abs(res["adamw_losses"]))))
        for k in res:
            if k.startswith("adamw."):
                err = np.abs(got[k] - res[k])
                worst_rel = max(worst_rel, float(err.max() / max(1.0, np.abs(res[k]).max())))
                worst_med = max(worst_med, float(np.median(err)))
    assert worst_loss <= bound and worst_rel <= bound and worst_med <= bound / 10, \
        (worst_loss, worst_rel, worst_med)
    return (f"under {noise:g} gradient noise: losses {worst_loss:.1e}, adapter {worst_rel:.1e} "
            f"(median {worst_med:.1e})")


def write_default(folder: Path, seed: int, prompt, base_logits):
    """adapter_default/: stock get_peft_model (no patch, default init) on a fresh copy of the base."""
    import torch
    from peft import get_peft_model
    torch.manual_seed(seed)
    pm = get_peft_model(load_base(DEFAULT_ADAPTER_BASE), lora_config(DEFAULT_TARGETS))
    params = adapter_params(pm)
    assert all(not p.any() for k, p in params.items() if ".lora_B." in k)
    assert all(p.abs().min() > 0 for k, p in params.items() if ".lora_A." in k)
    save_adapter(pm, folder / "adapter_default")
    assert np.array_equal(logits_of(pm.eval(), prompt), base_logits)
    return folder / "adapter_default", f"PEFT default init, {len(lora_modules(pm))} LoRA modules, logits == base"


def write_all(out: Path):
    written = []
    for idx, (base, targets, mm_name) in enumerate(BASES):
        written += write_one(out, idx, base, targets, mm_name)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    os.environ["USE_HUB_KERNELS"] = "NO"       # transformers' torch code only, as the base fixtures
    import torch
    import transformers
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for folder, note in write_all(out):
        files = [f for f in folder.iterdir() if f.is_file()]
        for f in files:
            f.chmod(0o644)      # save_pretrained writes safetensors 0600
            assert f.stat().st_size < MAX_FILE, f
        size = sum(f.stat().st_size for f in files)
        total += size
        print(f"{folder.relative_to(out)}  {size / 1024:7.1f} KiB  {note}")
    print(f"total {total / 1024:.1f} KiB under {out / 'lora'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
