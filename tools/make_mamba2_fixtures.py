"""Build the tiny Mamba-2 parity fixtures with HuggingFace transformers (CPU, f32, pure-PyTorch path).

    .venv/bin/python tools/make_mamba2_fixtures.py [--out tests/fixtures]

The Mamba-2 sibling of tools/make_fixtures.py: same folder layout, same file names, same npz keys
(only the shapes of conv_state / ssm_state differ, see below), so the same test helpers read both.
Needs the `reference` extra (torch + transformers 5.25); mamba_ssm / causal_conv1d are NOT installed and
Hub kernels are switched off (USE_HUB_KERNELS=NO: transformers >= 5.25 installs `kernels`), so every kernel
hook below falls back to transformers' torch code (asserted at run time).
Deterministic: fixed seeds, one torch thread, npz with fixed zip timestamps. The one exception is
pytorch_model.bin: torch.save writes a random `.data/serialization_id` record, so an existing .bin
whose tensors are unchanged is kept as is (re-running leaves every file byte-identical).

Written (all model folders hold 2 layers, conv_kernel 4, expand 2, head_dim 12 -- not a power of
two -- and a chunk_size that does not divide the 21-token prompt):

  models/mamba2-g1-tied/          n_groups 1, tied, hidden 24, heads 4, state 16, chunk 8, vocab 96
                                  (a multiple of 16 = mamba_ssm's pad_vocab_size_multiple written below)
  models/mamba2-g1-tied-ssm/      the same weights in mamba_ssm's layout: mamba_ssm config.json and
                                  model.safetensors (f32, mamba_ssm tensor names, lm_head.weight saved too)
  models/mamba2-g1-tied-ssm-bin/  same config.json, same tensors as pytorch_model.bin = torch.save(state_dict)
                                  (default zip format; lm_head.weight shares embedding's storage, as
                                  mamba_ssm's tied state_dict does)
  models/mamba2-g2-untied/        n_groups 2, untied, use_bias (in_proj/out_proj bias), hidden 36, heads 6,
                                  state 8, chunk 16, vocab 89; layer 0 head 1 has dt_bias 21.5 (softplus's
                                  x > 20 branch: dt = x; that head forgets its state every token)
  models/mamba2-g2-untied-bf16/   same weights stored in bf16 (model.to(bf16).save_pretrained)
  models/mamba2-g2-untied-f16/    same in f16
  train/mamba2-g1-untied/         n_groups 1, hidden 24, heads 4, state 8, chunk 4, vocab 77, untied
  train/mamba2-g2-untied/         n_groups 2, hidden 24, heads 4, state 8, chunk 4, vocab 77, untied, use_bias

models/*/expected.npz (computed by transformers in float32 on the folder's weights widened to f32,
i.e. from_pretrained(folder, dtype=float32); the -ssm folders hold a byte copy of mamba2-g1-tied's):
  prompt_ids     int64 [P]            P = 21
  logits         f32   [P, V]         forward(prompt_ids) logits (chunked SSD scan path)
  conv_state     f32   [L, CD, K]     cache.get_conv_state(l)[0] after the prompt, CD = conv_dim =
                                      I + 2*G*N channels in order [x | B | C] (the pre-conv in_proj
                                      slice), K = conv_kernel time steps, oldest first, NEWEST LAST
                                      (zero-padded on the left if the prompt were shorter than K)
  ssm_state      f32   [L, H, P, N]   cache.get_recurrent_state(l)[0] after the prompt: heads H,
                                      head_dim P (hd), state N -- mamba_ssm's [B, nheads, headdim, d_state]
  greedy_ids     int64 [16]           the 16 *new* tokens of generate(do_sample=False, use_cache=True),
                                      no EOS stop (prompt not included); decode uses the 1-token path
  greedy_logits  f32   [16, V]        the logits each of those tokens was the argmax of
                                      (greedy_logits[0] == logits[-1])
The prompt is chosen (seeded retries) so that every greedy step's top-1/top-2 gap is >= 1e-3.
Each model folder also gets fixture.json: name, source, the layouts above and the shapes.

train/<name>/expected.npz -- same keys and hyper-parameters as tools/make_fixtures.py:
  input_ids      int64 [2, 11]        (11 = 2 chunks of 4 + a padded third: crosses chunk boundaries)
  labels         int64 [2, 11]        = input_ids with labels[1, 5] = -100 (ignored)
  loss           f32   []             HF ForCausalLMLoss: mean CE over non-ignored next tokens
  grad.<hf name> f32                  d loss / d param, torch autograd at the initial params
  adamw_losses   f32   [5]            loss before each of the 5 AdamW steps
  adamw.<hf name> f32                 params after 5 torch.optim.AdamW steps on that batch, lr 1e-2,
                                      betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on parameters whose
                                      name ends with embeddings.weight / lm_head.weight /
                                      in_proj.weight / out_proj.weight (the Mamba-1 suffix list; Mamba-2
                                      has no x_proj / dt_proj), 0 on everything else (A_log, D, dt_bias,
                                      conv1d.*, norms, biases)

transformers 5.24 / 5.25 Mamba-2 conventions verified here (asserted in checks_on_conventions() / the unit test):
  * in_proj output rows: [z (I) | x (I) | B (G*N) | C (G*N) | dt (H)], I = expand*hidden = H*P.
    mamba_ssm's Mamba2 uses the same order ("Order: [z, x, B, C, dt]") with d_mlp = 0.
  * conv1d is depthwise over the conv_dim = I + 2*G*N channels x|B|C (weight [CD, 1, K], bias [CD]),
    followed by SiLU; z and dt bypass it.
  * head h reads B/C group h // (H/G) (repeat_interleave), dt = softplus(dt_raw + dt_bias[h]) (torch
    softplus: threshold 20, above it dt = x), A = -exp(A_log[h]), y = C.h + D[h]*x (D per head).
  * time_step_limit: the chunked (prefill / training) path clamps dt to time_step_limit, the 1-token
    decode path (mamba2_selective_state_update) does NOT clamp (neither does mamba_ssm's step()).
    The default limit is (0, inf), so with it both agree; all fixtures use the default.
    save_pretrained writes it as [0.0, {"__float__": "Infinity"}] (transformers' JSON encoding of inf).
  * gated RMSNorm (Mamba2RMSNormGated, named MambaRMSNormGated before 5.25; norm_before_gate=False):
    y = y * silu(z) first, then RMS-normalise in n_groups groups of group_size = I / n_groups contiguous
    channels (group g = the heads that share B/C group g), eps = layer_norm_epsilon, then * weight [I].
    mamba_ssm: RMSNormGated(group_size=d_ssm/ngroups).
  * every RMSNorm eps is layer_norm_epsilon = 1e-5 (= mamba_ssm's hard-wired 1e-5); residual in f32.
  * cache (DynamicCache of LinearAttentionLayer): conv state [Bsz, CD, K] newest last, recurrent state
    [Bsz, H, P, N], as documented for expected.npz above.
  * training (model.train(), no cache) first calls mamba2_split_conv1d_scan_combined, which without
    mamba_ssm is transformers' stub returning None, so it falls back to the torch chunked path
    (asserted: mamba2_chunk_scan runs once per layer during the recorded training forward).
  * tied checkpoints: save_pretrained omits lm_head.weight (tie_word_embeddings=True in config.json).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script: tools.* from the repo root
from tools.fixture_common import (MAMBA_DECAY_SUFFIXES, N_NEW, assert_torch_path, check_greedy,  # noqa: E402
                                  counted_loss, dtype_variants, find_prompt, fresh_dir, greedy, run_cli,
                                  save_npz, seeded_model, stepwise_logits, write_json, write_train_set)

PROMPT_LEN = 21
TRAIN_SHAPE = (2, 11)
PAD_VOCAB_MULTIPLE = 16

COMMON = dict(num_hidden_layers=2, conv_kernel=4, expand=2, head_dim=12, use_conv_bias=True,
              layer_norm_epsilon=1e-5, time_step_limit=(0.0, float("inf")))

# name, config overrides, options: dtype suffixes to write, mamba_ssm-layout copies, perturbations
MODELS = [
    ("mamba2-g1-tied",
     dict(hidden_size=24, num_heads=4, n_groups=1, state_size=16, chunk_size=8, vocab_size=96,
          tie_word_embeddings=True, use_bias=False),
     dict(suffixes=("",), ssm_copy=True)),
    ("mamba2-g2-untied",
     dict(hidden_size=36, num_heads=6, n_groups=2, state_size=8, chunk_size=16, vocab_size=89,
          tie_word_embeddings=False, use_bias=True),
     dict(suffixes=("", "-bf16", "-f16"), big_dt_bias=True)),
]
TRAIN_MODELS = [
    ("mamba2-g1-untied",
     dict(hidden_size=24, num_heads=4, n_groups=1, state_size=8, chunk_size=4, vocab_size=77,
          tie_word_embeddings=False, use_bias=False)),
    ("mamba2-g2-untied",
     dict(hidden_size=24, num_heads=4, n_groups=2, state_size=8, chunk_size=4, vocab_size=77,
          tie_word_embeddings=False, use_bias=True)),
]

LAYOUT = {
    "in_proj_rows": "[z (I) | x (I) | B (G*N) | C (G*N) | dt (H)]",
    "conv_channels": "[x (I) | B (G*N) | C (G*N)]",
    "conv_state": "[L, conv_dim, K] per layer: last K pre-conv x|B|C inputs, oldest first, newest last",
    "ssm_state": "[L, H, P, N] per layer: heads, head_dim, state",
    "head_to_group": "group = head // (num_heads / n_groups)",
    "gated_norm": "y*silu(z), then RMS over n_groups groups of intermediate/n_groups channels, * weight",
    "dt": "softplus(dt_raw + dt_bias); prefill clamps to time_step_limit, 1-token decode does not",
}


def make_config(overrides):
    from transformers import Mamba2Config
    return Mamba2Config(**COMMON, **overrides)


def build(overrides, seed, big_dt_bias=False, out_scale=4.0, in_scale=2.5):
    """Seeded random Mamba2ForCausalLM with every non-matrix parameter moved off its init value."""
    import torch
    from transformers import Mamba2ForCausalLM
    model, rn = seeded_model(Mamba2ForCausalLM, make_config(overrides), seed)
    with torch.no_grad():
        for i, layer in enumerate(model.backbone.layers):
            mx = layer.mixer
            mx.A_log.add_(rn(mx.A_log, 0.3))
            mx.D.copy_(1.0 + rn(mx.D, 0.5))
            # init dt is 1e-3..0.1 (state barely moves); softplus(N(-1, 1)) ~ 0.05..1.3: some heads
            # forget within a few tokens, others remember the whole prompt
            mx.dt_bias.copy_(rn(mx.dt_bias, 1.0) - 1.0)
            mx.conv1d.bias.copy_(rn(mx.conv1d.bias, 0.2))
            mx.norm.weight.copy_(1.0 + rn(mx.norm.weight, 0.3))
            layer.norm.weight.copy_(1.0 + rn(layer.norm.weight, 0.3))
            if mx.in_proj.bias is not None:
                mx.in_proj.bias.copy_(rn(mx.in_proj.bias, 0.1))
                mx.out_proj.bias.copy_(rn(mx.out_proj.bias, 0.1))
            # x, B, C of O(1) (init gives ~0.15 after conv + SiLU): the state term C.h is then as
            # large as the D skip; louder mixers: otherwise a tied head mostly echoes the last token
            mx.in_proj.weight.mul_(in_scale)
            mx.out_proj.weight.mul_(out_scale)
            if big_dt_bias and i == 0:
                mx.dt_bias[1] = 21.5
        model.backbone.norm_f.weight.copy_(1.0 + rn(model.backbone.norm_f.weight, 0.3))
    return model


def states_of(cache, L):
    conv = np.stack([cache.get_conv_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
    ssm = np.stack([cache.get_recurrent_state(l)[0].numpy() for l in range(L)]).astype(np.float32)
    return conv, ssm


def expected_for(folder: Path, seed):
    """Load folder widened to f32 and compute prompt logits, states, greedy continuation."""
    import torch
    from transformers import Mamba2ForCausalLM
    model = Mamba2ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    V, L = model.config.vocab_size, model.config.num_hidden_layers
    model.generation_config.eos_token_id = None

    def run(prompt):
        ids = torch.from_numpy(prompt)[None]
        with torch.no_grad():
            out = model(ids, use_cache=True)
            conv, ssm = states_of(out.cache, L)
            logits = out.logits[0].numpy().astype(np.float32)
            # the decode path agrees with the chunked path (logits and states)
            slog, scache = stepwise_logits(model, ids)
            sconv, sssm = states_of(scache, L)
            assert np.abs(slog - logits).max() < 1e-4, np.abs(slog - logits).max()
            assert np.abs(sconv - conv).max() < 1e-5 and np.abs(sssm - ssm).max() < 1e-4 * max(1, np.abs(ssm).max())
            new, glog = greedy(model, ids)
        check_greedy(new, glog, logits)
        return (dict(prompt_ids=prompt, logits=logits, conv_state=conv, ssm_state=ssm,
                     greedy_ids=new, greedy_logits=glog),)

    (exp,), gap, attempt = find_prompt(folder, seed, V, PROMPT_LEN, run)
    return exp, gap, attempt


def context_matters(model, exp):
    """The prompt's early tokens must move the last logits (the SSM state carries information)."""
    import torch
    ids = torch.from_numpy(exp["prompt_ids"])[None]
    with torch.no_grad():
        short = model(ids[:, -4:]).logits[0, -1].numpy()
    return float(np.abs(short - exp["logits"][-1]).max())


def fixture_json(name, cfg, exp, source, **extra):
    L, CD, K = exp["conv_state"].shape
    _, H, P, N = exp["ssm_state"].shape
    return dict(name=name, source=source, prompt_len=PROMPT_LEN, n_new=N_NEW,
                conv_state_shape=[L, CD, K], ssm_state_shape=[L, H, P, N],
                intermediate=cfg.expand * cfg.hidden_size, conv_dim=CD, layout=LAYOUT, **extra)


# ------------------------------------------------------------------------------------------------
# mamba_ssm layout
# ------------------------------------------------------------------------------------------------

def ssm_config(cfg) -> dict:
    """mamba_ssm MambaConfig (models/config_mamba.py) for an HF Mamba2Config."""
    assert cfg.vocab_size % PAD_VOCAB_MULTIPLE == 0, "mamba_ssm would pad the vocab"
    assert not cfg.use_bias and cfg.use_conv_bias and cfg.layer_norm_epsilon == 1e-5
    return {
        "d_model": cfg.hidden_size,
        "d_intermediate": 0,
        "n_layer": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size,
        "ssm_cfg": {"layer": "Mamba2", "d_state": cfg.state_size, "d_conv": cfg.conv_kernel,
                    "expand": cfg.expand, "headdim": cfg.head_dim, "ngroups": cfg.n_groups,
                    "chunk_size": cfg.chunk_size},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": PAD_VOCAB_MULTIPLE,
        "tie_embeddings": bool(cfg.tie_word_embeddings),
    }


SSM_MIXER_ORDER = ("dt_bias", "A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "norm.weight",
                   "out_proj.weight")


def hf_to_ssm_name(name: str) -> str:
    return name.replace("backbone.embeddings.", "backbone.embedding.")


def ssm_state_dict(hf_sd: dict, cfg) -> dict:
    """HF tensors -> mamba_ssm names, in mamba_ssm's state_dict order. lm_head.weight is the embedding
    tensor itself when tied (shared storage, as mamba_ssm's tie_weights leaves it)."""
    out = {"backbone.embedding.weight": hf_sd["backbone.embeddings.weight"]}
    for i in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{i}."
        for k in SSM_MIXER_ORDER:
            out[p + "mixer." + k] = hf_sd[p + "mixer." + k]
        out[p + "norm.weight"] = hf_sd[p + "norm.weight"]
    out["backbone.norm_f.weight"] = hf_sd["backbone.norm_f.weight"]
    out["lm_head.weight"] = out["backbone.embedding.weight"] if cfg.tie_word_embeddings else hf_sd["lm_head.weight"]
    assert {hf_to_ssm_name(k) for k in hf_sd} | {"lm_head.weight"} == set(out), "unmapped tensor"
    return out


def same_tensors(a: dict, b: dict) -> bool:
    import torch
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def write_ssm_copies(out: Path, name: str, hf_folder: Path, cfg, info: dict):
    import torch
    from safetensors.torch import load_file, save_file
    hf_sd = load_file(hf_folder / "model.safetensors")
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in hf_sd
    sd = ssm_state_dict(hf_sd, cfg)
    written = []
    for suffix, weights in (("-ssm", "model.safetensors"), ("-ssm-bin", "pytorch_model.bin")):
        folder = out / "models" / (name + suffix)
        keep_bin = None
        if weights.endswith(".bin") and (folder / weights).exists():
            old = torch.load(folder / weights, weights_only=True)
            if same_tensors(old, sd):
                keep_bin = (folder / weights).read_bytes()
        fresh_dir(folder)
        folder.mkdir(parents=True)
        write_json(folder / "config.json", ssm_config(cfg))
        if weights.endswith(".safetensors"):
            save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(folder / weights),
                      metadata={"format": "pt"})
        elif keep_bin is not None:
            (folder / weights).write_bytes(keep_bin)
        else:
            torch.save(sd, folder / weights)
        shutil.copyfile(hf_folder / "expected.npz", folder / "expected.npz")
        write_json(folder / "fixture.json", dict(info, name=name + suffix, source=(
            f"mamba_ssm layout of {name} ({weights}); names: backbone.embeddings.* -> backbone.embedding.*, "
            "lm_head.weight saved although tied; expected.npz is a copy of that folder's")))
        written.append((folder, f"mamba_ssm copy of {name} ({weights})"))
    return written


# ------------------------------------------------------------------------------------------------

def write_models(out: Path):
    written = []
    for idx, (name, overrides, opts) in enumerate(MODELS):
        seed = 4321 + 17 * idx
        model = build(overrides, seed, big_dt_bias=opts.get("big_dt_bias", False))
        for suffix, dtype, folder in dtype_variants(out, name, model, opts["suffixes"]):
            exp, gap, attempt = expected_for(folder, seed)
            save_npz(folder / "expected.npz", exp)
            spread = context_matters(model.float(), exp) if suffix == "" else float("nan")
            info = fixture_json(name + suffix, model.config, exp,
                                f"transformers Mamba2ForCausalLM, weights stored as {str(dtype)[6:]}; "
                                "expected computed in f32 on those (rounded) weights")
            write_json(folder / "fixture.json", info)
            written.append((folder, f"greedy gap {gap:.2e} (prompt try {attempt}), context effect {spread:.2f}, "
                                    f"greedy {exp['greedy_ids'].tolist()}"))
            if suffix == "" and opts.get("ssm_copy"):
                written += write_ssm_copies(out, name, folder, model.config, info)
    return written


def write_train(out: Path):
    from transformers.models.mamba2 import modeling_mamba2 as mm
    # the fused mamba_ssm entry point must fall through to the torch chunked scan
    first = lambda m, ids, lab: counted_loss(m, ids, lab, mm, m.config.num_hidden_layers)  # noqa: E731
    return write_train_set(out, TRAIN_MODELS, 999, build, TRAIN_SHAPE, MAMBA_DECAY_SUFFIXES, first_loss=first)


def checks_on_conventions():
    """Cheap assertions of the conventions documented above, on a throwaway model."""
    from transformers.models.mamba2 import modeling_mamba2 as mm
    assert_torch_path(mm)
    model = build(MODELS[1][1], 1)
    mx = model.backbone.layers[0].mixer
    I, G, N, H = mx.intermediate_size, mx.n_groups, mx.ssm_state_size, mx.num_heads
    assert mx.in_proj.out_features == 2 * I + 2 * G * N + H
    assert mx.conv1d.in_channels == mx.conv_dim == I + 2 * G * N
    assert mx.norm.group_size == I // G


def main(argv=None):
    return run_cli(argv, __doc__.splitlines()[0], lambda out: write_models(out) + write_train(out),
                   checks=checks_on_conventions)


if __name__ == "__main__":
    sys.exit(main())
