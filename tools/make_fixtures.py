"""Build the tiny Mamba-1 / Falcon-Mamba parity fixtures with HuggingFace transformers (CPU, f32).

    .venv/bin/python tools/make_fixtures.py [--out tests/fixtures]

Needs the `reference` extra (torch + transformers); the unit tests that read the fixtures do not.
transformers runs its pure-PyTorch path (no mamba_ssm / causal_conv1d installed, Hub kernels off).
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

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script: tools.* from the repo root
from tools.fixture_common import (MAMBA_DECAY_SUFFIXES, check_greedy, dtype_variants, find_prompt,  # noqa: E402
                                  greedy, run_cli, save_npz, seeded_model, write_train_set)

PROMPT_LEN = 12

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

def classes(arch):
    import transformers as tf
    if arch == "mamba":
        return tf.MambaConfig, tf.MambaForCausalLM
    return tf.FalconMambaConfig, tf.FalconMambaForCausalLM


def build(arch, overrides, seed, big_dt_bias=False, out_scale=4.0):
    """Seeded random model, with A_log / D / dt bias / norms / conv bias moved off their init."""
    import torch
    cfg_cls, model_cls = classes(arch)
    model, rn = seeded_model(model_cls, cfg_cls(**COMMON, **overrides), seed)
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
    _, model_cls = classes(arch)
    model = model_cls.from_pretrained(folder, dtype=torch.float32).eval()
    L = model.config.num_hidden_layers
    # no EOS stop: the saved generation_config says eos_token_id=0 and generate() merges it in
    model.generation_config.eos_token_id = None

    def run(prompt):
        ids = torch.from_numpy(prompt)[None]
        with torch.no_grad():
            out = model(ids, use_cache=True)
            cache = out.cache_params
            conv = np.stack([cache.get_conv_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
            ssm = np.stack([cache.get_recurrent_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
            logits = out.logits[0].numpy().astype(np.float32)
            new, glog = greedy(model, ids)
        check_greedy(new, glog, logits)
        return (dict(prompt_ids=prompt, logits=logits, conv_state=conv, ssm_state=ssm,
                     greedy_ids=new, greedy_logits=glog),)

    (exp,), gap, attempt = find_prompt(folder, seed, model.config.vocab_size, PROMPT_LEN, run)
    return exp, gap, attempt


def write_models(out: Path):
    written = []
    for idx, (name, arch, overrides, opts) in enumerate(MODELS):
        seed = 1234 + 17 * idx
        model = build(arch, overrides, seed, **opts)
        for _, _, folder in dtype_variants(out, name, model, ("", "-bf16", "-f16")):
            exp, gap, attempt = expected_for(folder, arch, seed)
            save_npz(folder / "expected.npz", exp)
            written.append((folder, f"greedy gap {gap:.2e} (prompt try {attempt}), "
                                    f"greedy {exp['greedy_ids'].tolist()}"))
    return written


def write_train(out: Path):
    return write_train_set(out, TRAIN_MODELS, 777, build, (2, 8), MAMBA_DECAY_SUFFIXES)


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


def write_all(out: Path):
    written = write_models(out) + write_train(out)
    (out / "README.md").write_text(README)
    return written


def main(argv=None):
    return run_cli(argv, __doc__.splitlines()[0], write_all)


if __name__ == "__main__":
    sys.exit(main())
