"""Build the tiny Mamba-1 / Falcon-Mamba parity fixtures with HuggingFace transformers (CPU, f32).

    .venv/bin/python tools/make_fixtures.py [--out tests/fixtures]

Needs the `reference` extra (torch + transformers); the unit tests that read the fixtures do not.
transformers runs its pure-PyTorch path (no mamba_ssm / causal_conv1d / kernels installed).
Deterministic: fixed seeds, one torch thread, npz written with fixed zip timestamps -> re-running
gives byte-identical files (same torch/transformers versions).

Layout written (see also the README.md it writes next to them):

  models/<name>/          config.json, generation_config.json, model.safetensors (f32), expected.npz
  models/<name>-bf16/     same, safetensors in bf16 (model.to(bf16).save_pretrained)
  models/<name>-f16/      same, safetensors in f16
  train/<name>/           config.json, model.safetensors (f32 initial params), expected.npz

models/*/expected.npz (all computed by transformers in float32 on that folder's weights widened
to f32, i.e. from_pretrained(folder, dtype=float32)):
  prompt_ids     int64 [P]            P = 12
  logits         f32   [P, V]         forward(prompt_ids) logits
  conv_state     f32   [L, I, K]      cache.get_conv_state(l)[0] after the prompt: the last K
                                      pre-conv inputs (x half of in_proj), oldest first, newest last
  ssm_state      f32   [L, I, N]      cache.get_recurrent_state(l)[0] after the prompt
  greedy_ids     int64 [16]           the 16 *new* tokens of generate(do_sample=False,
                                      use_cache=True), no EOS stop (prompt not included)
  greedy_logits  f32   [16, V]        the logits each of those tokens was the argmax of
                                      (greedy_logits[0] == logits[-1])
The prompt is chosen (seeded retries) so that every greedy step's top-1/top-2 gap is >= 1e-3.

train/<name>/expected.npz:
  input_ids      int64 [2, 8]
  labels         int64 [2, 8]         = input_ids with labels[1, 5] = -100 (ignored)
  loss           f32   []             HF ForCausalLMLoss: mean CE over non-ignored next tokens
  grad.<hf name> f32                  d loss / d param, torch autograd at the initial params
  adamw_losses   f32   [5]            loss before each of the 5 AdamW steps
  adamw.<hf name> f32                 params after 5 torch.optim.AdamW steps on that same batch,
                                      lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on
                                      embeddings / lm_head / in,x,dt,out_proj weights only
"""

from __future__ import annotations

import argparse
import copy
import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

PROMPT_LEN = 12
N_NEW = 16
MIN_GAP = 1e-3

# name, architecture, config overrides, perturbation options
MODELS = [
    ("mamba-d40-tied", "mamba",
     dict(hidden_size=40, state_size=8, time_step_rank=3, vocab_size=101, tie_word_embeddings=True), {}),
    ("mamba-d24-untied", "mamba",
     dict(hidden_size=24, state_size=16, time_step_rank=5, vocab_size=77, tie_word_embeddings=False),
     # two channels of layer 0 get dt_proj.bias > 20: the softplus threshold branch (dt = x)
     {"big_dt_bias": True}),
    ("falcon-d40-untied", "falcon_mamba",
     dict(hidden_size=40, state_size=16, time_step_rank=3, vocab_size=101, tie_word_embeddings=False,
          mixer_rms_eps=1e-3), {}),
    ("falcon-d24-tied", "falcon_mamba",
     dict(hidden_size=24, state_size=8, time_step_rank=5, vocab_size=77, tie_word_embeddings=True), {}),
]
TRAIN_MODELS = [
    ("mamba-d24-untied", "mamba",
     dict(hidden_size=24, state_size=8, time_step_rank=5, vocab_size=77, tie_word_embeddings=False)),
    ("falcon-d24-untied", "falcon_mamba",
     dict(hidden_size=24, state_size=8, time_step_rank=3, vocab_size=77, tie_word_embeddings=False)),
]
COMMON = dict(num_hidden_layers=2, conv_kernel=4, expand=2, use_conv_bias=True, use_bias=False)

DECAY_SUFFIXES = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight",
                  "out_proj.weight")


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez without the wall-clock timestamps: sorted members, fixed date, stored."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def classes(arch):
    import transformers as tf
    if arch == "mamba":
        return tf.MambaConfig, tf.MambaForCausalLM
    return tf.FalconMambaConfig, tf.FalconMambaForCausalLM


def build(arch, overrides, seed, big_dt_bias=False, out_scale=4.0):
    """Seeded random model, with A_log / D / dt bias / norms / conv bias moved off their init."""
    import torch
    cfg_cls, model_cls = classes(arch)
    cfg = cfg_cls(**COMMON, **overrides)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)

    def rn(t, scale):
        return torch.randn(t.shape, generator=g, dtype=torch.float32) * scale

    with torch.no_grad():
        for i, layer in enumerate(model.backbone.layers):
            mx = layer.mixer
            mx.A_log.add_(rn(mx.A_log, 0.3))
            mx.D.copy_(1.0 + rn(mx.D, 0.5))
            mx.dt_proj.bias.add_(rn(mx.dt_proj.bias, 0.5))
            mx.conv1d.bias.copy_(rn(mx.conv1d.bias, 0.2))
            layer.norm.weight.copy_(1.0 + rn(layer.norm.weight, 0.3))
            # louder mixers: otherwise a tied head just echoes the last token's embedding
            mx.out_proj.weight.mul_(out_scale)
            if big_dt_bias and i == 0:
                mx.dt_proj.bias[3] = 21.5
                mx.dt_proj.bias[7] = 24.0
        model.backbone.norm_f.weight.copy_(1.0 + rn(model.backbone.norm_f.weight, 0.3))
    return model


def expected_for(folder: Path, arch, seed):
    """Load folder widened to f32 and compute prompt logits, states, greedy continuation."""
    import torch
    from transformers import GenerationConfig
    _, model_cls = classes(arch)
    model = model_cls.from_pretrained(folder, dtype=torch.float32).eval()
    V = model.config.vocab_size
    # no EOS stop: the saved generation_config says eos_token_id=0 and generate() merges it in
    model.generation_config.eos_token_id = None
    for attempt in range(50):
        rng = np.random.RandomState(seed * 1000 + attempt)
        prompt = rng.randint(0, V, size=PROMPT_LEN).astype(np.int64)
        ids = torch.from_numpy(prompt)[None]
        with torch.no_grad():
            out = model(ids, use_cache=True)
            cache = out.cache_params
            L = model.config.num_hidden_layers
            conv = np.stack([cache.get_conv_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
            ssm = np.stack([cache.get_recurrent_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
            logits = out.logits[0].numpy().astype(np.float32)
            gc = GenerationConfig(max_new_tokens=N_NEW, min_new_tokens=0, do_sample=False, use_cache=True,
                                  eos_token_id=None, pad_token_id=0, bos_token_id=None,
                                  output_logits=True, return_dict_in_generate=True)
            gen = model.generate(ids, generation_config=gc)
        new = gen.sequences[0, PROMPT_LEN:].numpy().astype(np.int64)
        glog = torch.stack(gen.logits, 0)[:, 0].numpy().astype(np.float32)
        assert len(new) == N_NEW, "generation stopped early"
        assert (np.argmax(glog, -1) == new).all()
        assert np.abs(glog[0] - logits[-1]).max() < 1e-5
        top2 = np.sort(glog, axis=-1)[:, -2:]
        gap = float((top2[:, 1] - top2[:, 0]).min())
        if gap >= MIN_GAP:
            return dict(prompt_ids=prompt, logits=logits, conv_state=conv, ssm_state=ssm,
                        greedy_ids=new, greedy_logits=glog), gap, attempt
    raise RuntimeError(f"{folder}: no prompt with greedy gap >= {MIN_GAP}")


def write_models(out: Path):
    import torch
    written = []
    for idx, (name, arch, overrides, opts) in enumerate(MODELS):
        seed = 1234 + 17 * idx
        model = build(arch, overrides, seed, **opts)
        for suffix, dtype in (("", torch.float32), ("-bf16", torch.bfloat16), ("-f16", torch.float16)):
            folder = out / "models" / (name + suffix)
            if folder.exists():
                shutil.rmtree(folder)
            copy.deepcopy(model).to(dtype).save_pretrained(folder)
            exp, gap, attempt = expected_for(folder, arch, seed)
            save_npz(folder / "expected.npz", exp)
            written.append((folder, f"greedy gap {gap:.2e} (prompt try {attempt}), greedy {exp['greedy_ids'].tolist()}"))
    return written


def write_train(out: Path):
    import torch
    written = []
    for idx, (name, arch, overrides) in enumerate(TRAIN_MODELS):
        seed = 777 + 31 * idx
        model = build(arch, overrides, seed)
        folder = out / "train" / name
        if folder.exists():
            shutil.rmtree(folder)
        model.save_pretrained(folder)
        V = model.config.vocab_size
        rng = np.random.RandomState(seed)
        ids = rng.randint(0, V, size=(2, 8)).astype(np.int64)
        labels = ids.copy()
        labels[1, 5] = -100
        model.train()
        tids, tlab = torch.from_numpy(ids), torch.from_numpy(labels)
        res = dict(input_ids=ids, labels=labels)
        model.zero_grad()
        loss = model(input_ids=tids, labels=tlab, use_cache=False).loss
        loss.backward()
        res["loss"] = np.float32(loss.item())
        for k, p in model.named_parameters():
            res["grad." + k] = p.grad.detach().numpy().astype(np.float32).copy()
        decay = [p for k, p in model.named_parameters() if k.endswith(DECAY_SUFFIXES)]
        no_decay = [p for k, p in model.named_parameters() if not k.endswith(DECAY_SUFFIXES)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = model(input_ids=tids, labels=tlab, use_cache=False).loss
            losses.append(loss.item())
            loss.backward()
            opt.step()
        res["adamw_losses"] = np.array(losses, dtype=np.float32)
        for k, p in model.named_parameters():
            res["adamw." + k] = p.detach().numpy().astype(np.float32).copy()
        save_npz(folder / "expected.npz", res)
        written.append((folder, f"loss {res['loss']:.6f}, after 5 AdamW steps {losses[-1]:.6f}"))
    return written


README = """# Parity fixtures (generated — do not edit)

Written by `tools/make_fixtures.py` (tiny random models, transformers pure-PyTorch path, CPU f32).
See that file's docstring for every array in `expected.npz` and its layout; the numpy reference
that is tested against them is `tests/reference/mamba1_model_numpy.py` (and the per-op `*_numpy.py` beside it).

- `models/<name>/`, `<name>-bf16/`, `<name>-f16/`: HF folders (config.json + model.safetensors in
  f32 / bf16 / f16) + `expected.npz` (prompt logits, greedy continuation, per-layer conv/ssm state
  after the prompt — computed in f32 on that folder's widened weights).
- `train/<name>/`: initial f32 params + `expected.npz` (batch, loss, autograd gradients by HF
  name, params after 5 AdamW steps).
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    args = ap.parse_args(argv)
    import torch
    import transformers
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_models(out) + write_train(out)
    (out / "README.md").write_text(README)
    total = 0
    for folder, note in written:
        size = sum(f.stat().st_size for f in folder.iterdir())
        total += size
        print(f"{folder.relative_to(out.parent) if out.parent in folder.parents else folder}  "
              f"{size / 1024:7.1f} KiB  {note}")
    print(f"total {total / 1024:.1f} KiB in {len(written)} folders under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
