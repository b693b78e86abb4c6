"""Build the tiny NemotronH (hybrid Mamba-2 + attention + MLP) parity fixtures with HuggingFace transformers
(CPU, f32, pure-PyTorch path).

    .venv/bin/python tools/make_hybrid_fixtures.py [--out tests/fixtures]

The hybrid sibling of tools/make_mamba2_fixtures.py: same folder layout, same file names, same npz keys
(prompt_ids, logits, conv_state, ssm_state, greedy_ids, greedy_logits; the training keys and AdamW settings),
plus the attention layers' KV cache (key_cache / value_cache). conv_state / ssm_state stack only the Mamba
layers, key_cache / value_cache only the attention layers; fixture.json names which layers those are.
Needs the `reference` extra (torch + transformers 5.25); mamba_ssm / causal_conv1d are NOT installed and Hub
kernels are switched off (USE_HUB_KERNELS=NO: transformers >= 5.25 installs `kernels`), so every kernel hook
falls back to transformers' torch code (asserted at run time).
Deterministic: fixed seeds, one torch thread, npz with fixed zip timestamps.

Written (every model: 4 layers M * - M = [mamba, attention, mlp, mamba], GQA 4 query / 2 KV heads, no RoPE,
MLP relu2, Mamba-2 with n_groups 2, conv_kernel 4, a head_dim that is not a power of two, a chunk_size that
does not divide the 40-token prompt -- longer than one 32-wide attention tile):

  models/nemotronh-mamf-tied/        hidden 32, attn head_dim 12, mamba 4 heads x 12 (I 48), state 8,
                                     chunk 16, MLP 64, vocab 96, tie_word_embeddings=True (see "tying")
  models/nemotronh-mamf-tied-pattern/ the same weights and expected.npz; config.json carries the older
                                     "hybrid_override_pattern": "M*-M" instead of layers_block_type
  models/nemotronh-mamf-untied/      hidden 40, attn head_dim 8, mamba 6 heads x 10 (I 60), state 16,
                                     chunk 12, MLP 72, vocab 101, untied, use_bias (Mamba in/out_proj bias)
  models/nemotronh-mamf-untied-bf16/ same weights stored in bf16 (model.to(bf16).save_pretrained)
  models/nemotronh-mamf-untied-f16/  same in f16
  train/nemotronh-mamf-untied/       hidden 24, attn 4 x 6 (KV 2), mamba 4 x 6, state 8, chunk 4, MLP 40,
                                     vocab 77, untied
  train/nemotronh-amfm-untied/       the order [attention, mamba, mlp, mamba] ("*M-M"), same sizes, use_bias

models/*/expected.npz (transformers in float32 on the folder's weights widened to f32):
  prompt_ids     int64 [P]                P = 40
  logits         f32   [P, V]             forward(prompt_ids) logits (chunked SSD path: dt clamped, see below)
  conv_state     f32   [Lm, CD, K]        Mamba layers only (fixture.json "mamba_layers", in layer order):
                                          cache.get_conv_state(l)[0], CD = I + 2*G*N channels [x | B | C]
                                          (pre-conv in_proj slice), K time steps oldest first, NEWEST LAST
  ssm_state      f32   [Lm, H, P, N]      cache.get_recurrent_state(l)[0]: heads, mamba_head_dim, state
  key_cache      f32   [La, KVH, P, hd]   attention layers only (fixture.json "attention_layers"):
                                          cache.layers[l].keys[0] = k_proj(norm(x)) per KV head, every prompt
                                          position in order; no RoPE, so these are the raw projections
  value_cache    f32   [La, KVH, P, hd]   cache.layers[l].values[0] = v_proj(norm(x)), same layout
  greedy_ids     int64 [16]               the 16 new tokens of generate(do_sample=False, use_cache=True), no EOS,
                                          attention_mask all ones (else generate() treats prompt id 0 = pad_token_id
                                          as padding and the Mamba mixers zero those positions)
  step_logits    f32   [P, V]             the prompt fed one token at a time through the decode path (which
                                          never clamps dt), and step_<state> its caches after the prompt
  greedy_logits  f32   [16, V]            the logits each was the argmax of (greedy_logits[0] == logits[-1]);
                                          steps 1.. run the 1-token decode path: dt NOT clamped
The prompt is chosen (seeded retries) so that every greedy step's top-1/top-2 gap is >= 1e-3.

train/<name>/expected.npz -- the keys and hyper-parameters of tools/make_mamba2_fixtures.py:
  input_ids / labels int64 [2, 11] (labels[1, 5] = -100), loss, grad.<name> for every parameter,
  adamw_losses [5], adamw.<name>: torch.optim.AdamW lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on
  the 2-D weights (names ending embeddings.weight, lm_head.weight, in_proj.weight, out_proj.weight,
  {q,k,v,o}_proj.weight, up_proj.weight, down_proj.weight -- asserted == {p.dim() == 2}), 0 on the rest.
  <name> is the in-memory name (model.*), see "tensor names". The adamw.* values are asserted to be stable
  under 1e-5 relative gradient noise (check_conditioning), so that f32 rounding does not decide them.

transformers 5.25 NemotronH conventions verified here (asserted in checks_on_conventions() / the unit test):
  * tensor names. In memory: model.embeddings.weight, model.layers.{i}.norm.weight, model.norm_f.weight,
    lm_head.weight; Mamba mixer model.layers.{i}.mixer.{in_proj.weight, in_proj.bias?, conv1d.weight [CD,1,K],
    conv1d.bias, dt_bias [H], A_log [H], D [H], norm.weight [I], out_proj.weight, out_proj.bias?};
    attention mixer .mixer.{q_proj,k_proj,v_proj,o_proj}.weight (never a bias: attention_bias is ignored);
    MLP mixer .mixer.{up_proj,down_proj}.weight (+ .bias when mlp_bias). ON DISK (model.safetensors, and real
    NVIDIA checkpoints) the prefix is `backbone.` instead of `model.` (conversion_mapping.py renames
    "backbone." <-> "model." on load / save); lm_head.weight keeps its name.
  * config keys: layers_block_type = list of "linear_attention" (Mamba-2) | "full_attention" | "mlp" | "moe";
    the legacy names "mamba"/"attention" are remapped on construction, and "hybrid_override_pattern" (M * - E)
    is still read (and never written). num_hidden_layers is derived from the list. Mamba: mamba_num_heads,
    mamba_head_dim (intermediate I = mamba_num_heads * mamba_head_dim; `expand` is NOT used), n_groups,
    ssm_state_size, conv_kernel, chunk_size, use_conv_bias, use_bias (Mamba in/out_proj bias), time_step_limit
    (checkpoint key mamba_dt_limit; time_step_min / time_step_max only shape dt_bias's initialisation).
    Attention: num_attention_heads, num_key_value_heads, head_dim, scaling head_dim**-0.5. MLP:
    intermediate_size, mlp_hidden_act "relu2" (relu(x)^2, not gated), mlp_bias.
  * Mamba-2 mixer: in_proj rows [z (I) | x (I) | B (G*N) | C (G*N) | dt (H)], conv over x|B|C + SiLU, head h
    reads group h // (H/G), A = -exp(A_log), gated RMSNorm y*silu(z) then per group of I/G channels.
  * dt clamp: the mixer's limit is config.time_step_limit, default (0, inf), as for plain Mamba-2. (Up to
    5.24 it was (config.time_step_min, inf) whatever time_step_limit said; 5.25 changed that.) The chunked
    path (prefill, training) computes dt = clamp(softplus(dt_raw + dt_bias), *time_step_limit); the 1-token
    decode path (mamba2_selective_state_update) does NOT clamp. The fixtures ARE SENSITIVE to both bounds:
    time_step_limit is (0.05, 4.0), half the heads have dt_bias around -4 (softplus ~ 0.02) and dt_raw
    spreads some past 4, so dropping the clamp, or either bound alone, changes prompt logits, states and
    greedy logits by far more than the 1e-4 tolerance; time_step_min is left at its default 0.001, so an
    engine that still floors at time_step_min (5.24's rule) misses them too (measured values in fixture.json
    "dt_limit_effect"; the unit test re-measures them).
  * norm eps: every RMSNorm (block pre-norm, the Mamba gated group norm, norm_f) uses layer_norm_epsilon
    (1e-5 here); the gated norm's class default 1e-6 is overridden by it. The block norm multiplies the weight
    in f32; residual adds in the activations' dtype (f32 here).
  * attention: GQA, query head h uses KV head h // (num_attention_heads / num_key_value_heads), causal, no
    RoPE, no bias; KV cache [B, KVH, T, hd]. MLP layers hold no cache (DummyLayer).
  * tying: NemotronHForCausalLM._tied_weights_keys is {} (5.24 and 5.25), so tie_word_embeddings=True does NOT
    tie: lm_head.weight stays a separate parameter, is written to model.safetensors and read back. The "-tied"
    fixtures therefore store lm_head.weight == embeddings.weight (a copy) with tie_word_embeddings=True: an
    engine that ties and one that reads lm_head.weight get the same logits. (A file without lm_head.weight
    would leave lm_head at random init in transformers.)
  * training (model.train(), no cache): the fused mamba_ssm entry is transformers' stub returning None, so
    it falls back to the torch chunked path (asserted: mamba2_chunk_scan runs once per Mamba layer).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script: tools.* from the repo root
from tools.fixture_common import (ADAMW, ADAMW_STEPS, N_NEW, assert_torch_path, check_greedy,  # noqa: E402
                                  counted_loss, dtype_variants, find_prompt, fresh_dir, greedy, run_cli,
                                  save_npz, seeded_model, stepwise_logits, write_json, write_train_set)

PROMPT_LEN = 40
TRAIN_SHAPE = (2, 11)
TIME_STEP_LIMIT = (0.05, 4.0)    # bites at both ends (see "dt clamp"); time_step_min stays 0.001

MAMF = ["linear_attention", "full_attention", "mlp", "linear_attention"]
AMFM = ["full_attention", "linear_attention", "mlp", "linear_attention"]
COMMON = dict(conv_kernel=4, layer_norm_epsilon=1e-5, mlp_hidden_act="relu2", num_attention_heads=4,
              num_key_value_heads=2, n_groups=2, time_step_limit=TIME_STEP_LIMIT, use_conv_bias=True,
              mlp_bias=False, residual_in_fp32=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)

MODELS = [
    ("nemotronh-mamf-tied",
     dict(layers_block_type=MAMF, hidden_size=32, head_dim=12, mamba_num_heads=4, mamba_head_dim=12,
          ssm_state_size=8, chunk_size=16, intermediate_size=64, vocab_size=96, tie_word_embeddings=True,
          use_bias=False),
     dict(suffixes=("",), pattern_copy=True)),
    ("nemotronh-mamf-untied",
     dict(layers_block_type=MAMF, hidden_size=40, head_dim=8, mamba_num_heads=6, mamba_head_dim=10,
          ssm_state_size=16, chunk_size=12, intermediate_size=72, vocab_size=101, tie_word_embeddings=False,
          use_bias=True),
     dict(suffixes=("", "-bf16", "-f16"))),
]
TRAIN_MODELS = [
    ("nemotronh-mamf-untied",
     dict(layers_block_type=MAMF, hidden_size=24, head_dim=6, mamba_num_heads=4, mamba_head_dim=6,
          ssm_state_size=8, chunk_size=4, intermediate_size=40, vocab_size=77, tie_word_embeddings=False,
          use_bias=False)),
    ("nemotronh-amfm-untied",
     dict(layers_block_type=AMFM, hidden_size=24, head_dim=6, mamba_num_heads=4, mamba_head_dim=6,
          ssm_state_size=8, chunk_size=4, intermediate_size=40, vocab_size=77, tie_word_embeddings=False,
          use_bias=True)),
]

DECAY_SUFFIXES = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "out_proj.weight", "q_proj.weight",
                  "k_proj.weight", "v_proj.weight", "o_proj.weight", "up_proj.weight", "down_proj.weight")

LAYOUT = {
    "layer_types": "linear_attention = Mamba-2 mixer, full_attention = GQA attention (no RoPE), mlp = relu2 MLP",
    "in_proj_rows": "[z (I) | x (I) | B (G*N) | C (G*N) | dt (H)], I = mamba_num_heads * mamba_head_dim",
    "conv_channels": "[x (I) | B (G*N) | C (G*N)]",
    "conv_state": "[Lm, conv_dim, K] for the mamba_layers in order: last K pre-conv x|B|C inputs, newest last",
    "ssm_state": "[Lm, H, P, N] for the mamba_layers: heads, mamba_head_dim, state",
    "key_cache": "[La, KVH, T, head_dim] for the attention_layers: k_proj(norm(x)) of every prompt position, "
                 "no RoPE",
    "value_cache": "[La, KVH, T, head_dim] for the attention_layers: v_proj(norm(x))",
    "gqa": "query head h reads KV head h // (num_attention_heads / num_key_value_heads); scale head_dim**-0.5",
    "head_to_group": "mamba head h reads B/C group h // (mamba_num_heads / n_groups)",
    "gated_norm": "y*silu(z), then RMS over n_groups groups of I/n_groups channels (eps layer_norm_epsilon), "
                  "* weight",
    "dt": "softplus(dt_raw + dt_bias); prefill/training clamp it to time_step_limit, 1-token decode does not",
    "tensor_names_on_disk": "backbone.* (transformers renames to model.* in memory), lm_head.weight",
}


def make_config(overrides):
    from transformers import NemotronHConfig
    return NemotronHConfig(**COMMON, **overrides)


def build(overrides, seed):
    """Seeded random NemotronHForCausalLM, every parameter redrawn off its init value (matrices
    ~ N(0, gain^2/fan_in), vectors around their natural value) so that each one moves the logits."""
    import torch
    from transformers import NemotronHForCausalLM
    cfg = make_config(overrides)
    model, rn = seeded_model(NemotronHForCausalLM, cfg, seed)
    def mat(lin, gain):
        lin.weight.copy_(rn(lin.weight, gain / lin.weight.shape[1] ** 0.5))
        if lin.bias is not None:
            lin.bias.copy_(rn(lin.bias, 0.1))

    with torch.no_grad():
        model.model.embeddings.weight.copy_(rn(model.model.embeddings.weight, 1.0))
        for layer in model.model.layers:
            layer.norm.weight.copy_(1.0 + rn(layer.norm.weight, 0.3))
            mx = layer.mixer
            if layer.block_type == "linear_attention":
                H = mx.num_heads
                mat(mx.in_proj, 2.5)
                mat(mx.out_proj, 1.5)
                mx.A_log.copy_(rn(mx.A_log, 0.8))
                mx.D.copy_(1.0 + rn(mx.D, 0.5))
                # half the heads sit around softplus(-4) ~ 0.02 < the clamp's 0.05: the prefill floor bites
                # there; the others (softplus(N(-0.5, 1)), dt_raw reaching past the clamp's 4.0 at times)
                # forget within a few tokens or keep the prompt
                base = torch.tensor([-4.0 if h % 2 == 0 else -0.5 for h in range(H)])
                mx.dt_bias.copy_(base + rn(mx.dt_bias, 0.5))
                mx.conv1d.weight.copy_(rn(mx.conv1d.weight, 0.5))
                mx.conv1d.bias.copy_(rn(mx.conv1d.bias, 0.2))
                mx.norm.weight.copy_(1.0 + rn(mx.norm.weight, 0.3))
            elif layer.block_type == "full_attention":
                # q/k loud enough that attention is peaked (not uniform), so far tokens matter selectively
                mat(mx.q_proj, 3.0)
                mat(mx.k_proj, 3.0)
                mat(mx.v_proj, 1.5)
                mat(mx.o_proj, 1.5)
            else:
                mat(mx.up_proj, 1.5)
                mat(mx.down_proj, 1.0)
        model.model.norm_f.weight.copy_(1.0 + rn(model.model.norm_f.weight, 0.3))
        if cfg.tie_word_embeddings:
            # transformers 5.24/5.25 do not tie NemotronH: store the embedding as lm_head explicitly
            model.lm_head.weight.copy_(model.model.embeddings.weight)
        else:
            model.lm_head.weight.copy_(rn(model.lm_head.weight, 2.0 / cfg.hidden_size ** 0.5))
    return model


def layer_ids(cfg, kind):
    return [i for i, t in enumerate(cfg.layers_block_type) if t == kind]


def states_of(cache, cfg):
    m, a = layer_ids(cfg, "linear_attention"), layer_ids(cfg, "full_attention")
    f32 = np.float32
    return dict(
        conv_state=np.stack([cache.get_conv_state(l)[0].numpy() for l in m]).astype(f32),
        ssm_state=np.stack([cache.get_recurrent_state(l)[0].numpy() for l in m]).astype(f32),
        key_cache=np.stack([cache.layers[l].keys[0].numpy() for l in a]).astype(f32),
        value_cache=np.stack([cache.layers[l].values[0].numpy() for l in a]).astype(f32))


class dt_limit:
    """Within the block, NemotronH's chunked path clamps dt to `limit` instead of time_step_limit."""

    def __init__(self, model, limit=(0.0, float("inf"))):
        self.mixers = [l.mixer for l in model.model.layers if l.block_type == "linear_attention"]
        self.limit = tuple(limit)

    def __enter__(self):
        self.saved = [m.time_step_limit for m in self.mixers]
        for m in self.mixers:
            m.time_step_limit = self.limit

    def __exit__(self, *exc):
        for m, s in zip(self.mixers, self.saved):
            m.time_step_limit = s


def expected_for(folder: Path, seed):
    """Load folder widened to f32; prompt logits, caches, greedy continuation, and the dt-clamp effects."""
    import torch
    from transformers import NemotronHForCausalLM
    model = NemotronHForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg = model.config

    def run(prompt):
        ids = torch.from_numpy(prompt)[None]
        with torch.no_grad():
            out = model(ids, use_cache=True)
            logits = out.logits[0].numpy().astype(np.float32)
            st = states_of(out.cache, cfg)
            new, glog = greedy(model, ids, mask=True)
            with dt_limit(model):
                out_nf = model(ids, use_cache=True)
                st_nf = states_of(out_nf.cache, cfg)
                # without the clamp, prefill == token-by-token decode (the decode path never clamps)
                slog, scache = stepwise_logits(model, ids)
                _, glog_nf = greedy(model, ids, mask=True)
            sst = states_of(scache, cfg)
            lo, hi = cfg.time_step_limit
            partial = {}
            for key, limit in (("prompt_logits_without_low", (0.0, hi)),
                               ("prompt_logits_without_high", (lo, float("inf"))),
                               ("prompt_logits_with_5_24_rule", (cfg.time_step_min, float("inf")))):
                with dt_limit(model, limit):
                    partial[key] = float(np.abs(model(ids).logits[0].numpy() - logits).max())
        lnf = out_nf.logits[0].numpy()
        assert np.abs(slog - lnf).max() < 1e-4, np.abs(slog - lnf).max()
        assert all(np.abs(sst[k] - st_nf[k]).max() < 1e-4 * max(1, np.abs(st_nf[k]).max()) for k in sst)
        check_greedy(new, glog, logits)
        assert st["key_cache"].shape[2] == PROMPT_LEN
        effect = dict(prompt_logits=float(np.abs(lnf - logits).max()),
                      ssm_state=float(np.abs(st_nf["ssm_state"] - st["ssm_state"]).max()),
                      greedy_logits=float(np.abs(glog_nf - glog).max()), **partial)
        exp = dict(prompt_ids=prompt, logits=logits, greedy_ids=new, greedy_logits=glog, **st)
        # transformers' one-token decode path never clamps dt: the prompt fed one token at a
        # time through it (the recurrent path an engine's `step` mirrors), and its states
        exp["step_logits"] = slog
        exp.update({"step_" + k: v for k, v in sst.items()})
        return exp, effect

    (exp, effect), gap, attempt = find_prompt(folder, seed, cfg.vocab_size, PROMPT_LEN, run)
    return exp, gap, attempt, effect


def context_effects(model, exp):
    """How much the last logits move when (a) only the last 4 tokens are seen, (b) the first 8 tokens (more
    than 32 positions back) are changed: the caches carry information, including across a 32-token tile."""
    import torch
    ids = torch.from_numpy(exp["prompt_ids"])[None]
    with torch.no_grad():
        short = model(ids[:, -4:]).logits[0, -1].numpy()
        far = ids.clone()
        far[0, :8] = (far[0, :8] + 1) % model.config.vocab_size
        farl = model(far).logits[0, -1].numpy()
    last = exp["logits"][-1]
    return float(np.abs(short - last).max()), float(np.abs(farl - last).max())


def fixture_json(name, cfg, exp, source, **extra):
    m, a = layer_ids(cfg, "linear_attention"), layer_ids(cfg, "full_attention")
    return dict(name=name, source=source, prompt_len=PROMPT_LEN, n_new=N_NEW,
                layers_block_type=list(cfg.layers_block_type), mamba_layers=m, attention_layers=a,
                mlp_layers=layer_ids(cfg, "mlp"),
                conv_state_shape=list(exp["conv_state"].shape), ssm_state_shape=list(exp["ssm_state"].shape),
                key_cache_shape=list(exp["key_cache"].shape), value_cache_shape=list(exp["value_cache"].shape),
                intermediate=cfg.mamba_num_heads * cfg.mamba_head_dim, conv_dim=int(exp["conv_state"].shape[1]),
                time_step_limit=list(cfg.time_step_limit), time_step_min=cfg.time_step_min, layout=LAYOUT,
                **extra)


def write_pattern_copy(out: Path, name: str, folder: Path, info: dict):
    """Same weights / expected; config.json with hybrid_override_pattern instead of layers_block_type."""
    dst = out / "models" / (name + "-pattern")
    fresh_dir(dst)
    shutil.copytree(folder, dst)
    c = json.loads((folder / "config.json").read_text())
    from transformers import NemotronHConfig
    c["hybrid_override_pattern"] = NemotronHConfig._list_to_pattern(c.pop("layers_block_type"))
    write_json(dst / "config.json", c)
    write_json(dst / "fixture.json", dict(info, name=name + "-pattern", source=(
        f"{name} with config.json's layers_block_type replaced by hybrid_override_pattern "
        f"{c['hybrid_override_pattern']!r}; weights and expected.npz are byte copies")))
    return [(dst, f"pattern copy of {name}: {c['hybrid_override_pattern']}")]


def write_models(out: Path):
    written = []
    for idx, (name, overrides, opts) in enumerate(MODELS):
        seed = 7321 + 17 * idx
        model = build(overrides, seed)
        for suffix, dtype, folder in dtype_variants(out, name, model, opts["suffixes"]):
            exp, gap, attempt, effect = expected_for(folder, seed)
            save_npz(folder / "expected.npz", exp)
            short, far = context_effects(model.float(), exp) if suffix == "" else (float("nan"),) * 2
            info = fixture_json(name + suffix, model.config, exp,
                                f"transformers NemotronHForCausalLM, weights stored as {str(dtype)[6:]}; "
                                "expected computed in f32 on those (rounded) weights", dt_limit_effect=effect)
            write_json(folder / "fixture.json", info)
            written.append((folder, f"gap {gap:.2e} (try {attempt}), context {short:.2f}, >32 back {far:.3f}, "
                                    f"dt clamp {effect}, greedy {exp['greedy_ids'].tolist()}"))
            if suffix == "" and opts.get("pattern_copy"):
                written += write_pattern_copy(out, name, folder, info)
    return written


def write_train(out: Path):
    from transformers.models.nemotron_h import modeling_nemotron_h as mm

    def first(model, ids, labels):       # the fused entry point falls through to the torch chunked scan
        return counted_loss(model, ids, labels, mm, len(layer_ids(model.config, "linear_attention")))

    def check(model, res):
        params = dict(model.named_parameters())
        assert {k for k in params if k.endswith(DECAY_SUFFIXES)} == {k for k, p in params.items() if p.dim() == 2}
        for k in params:
            assert np.abs(res["grad." + k]).max() > 0, k        # every parameter moves the loss

    written = write_train_set(out, TRAIN_MODELS, 1999, build, TRAIN_SHAPE, DECAY_SUFFIXES, first_loss=first,
                              check=check)
    return [(folder, note + f", {check_conditioning(folder)}") for folder, note in written]


def check_conditioning(folder: Path, noise=1e-5, seeds=4, bound=5e-7):
    """The 5 AdamW steps of train/<name>/ rerun with every gradient element scaled by (1 + noise * N(0, 1))
    -- an f32 engine's gradients differ from torch's by about that -- must move no tensor's median element
    by more than `bound` (half what tests/browser/test_training.py allows). Adam divides by sqrt(v), so a
    trajectory whose gradients cancel across steps can turn 1e-5 into 1e-6; such a fixture would test
    rounding, not the engine (clamps at (0.05, 2.5) and (0.05, 3.0) did that here). Returns a note."""
    import torch
    from transformers import NemotronHForCausalLM
    exp = np.load(folder / "expected.npz")
    ids, labels = torch.from_numpy(exp["input_ids"]), torch.from_numpy(exp["labels"])
    worst = 0.0
    for seed in range(seeds):
        model = NemotronHForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
        params = dict(model.named_parameters())
        groups = [{"params": [p for k, p in params.items() if k.endswith(DECAY_SUFFIXES)], "weight_decay": 0.1},
                  {"params": [p for k, p in params.items() if not k.endswith(DECAY_SUFFIXES)], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, **ADAMW)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(ADAMW_STEPS):
            opt.zero_grad()
            model(input_ids=ids, labels=labels, use_cache=False).loss.backward()
            for p in params.values():
                p.grad.mul_(1 + noise * torch.randn(p.shape, generator=gen))
            opt.step()
        worst = max(worst, max(float(np.median(np.abs(p.detach().numpy() - exp["adamw." + k])))
                               for k, p in params.items()))
    assert worst <= bound, (folder, worst)
    return f"AdamW result under {noise:g} gradient noise: worst median move {worst:.1e}"


def checks_on_conventions():
    """Cheap assertions of the conventions documented above, on a throwaway model."""
    import tempfile
    import torch
    from safetensors.torch import load_file
    from transformers import NemotronHConfig, NemotronHForCausalLM
    from transformers.models.nemotron_h import modeling_nemotron_h as mm
    assert_torch_path(mm)
    assert NemotronHConfig(layers_block_type=["mamba", "attention", "mlp"]).layers_block_type == \
        ["linear_attention", "full_attention", "mlp"]
    assert NemotronHConfig(hybrid_override_pattern="M*-M").layers_block_type == MAMF
    model = build(MODELS[0][1], 1)
    mx = model.model.layers[0].mixer
    I, G, N, H = mx.intermediate_size, mx.n_groups, mx.ssm_state_size, mx.num_heads
    assert I == model.config.mamba_num_heads * model.config.mamba_head_dim
    assert mx.in_proj.out_features == 2 * I + 2 * G * N + H
    assert mx.conv1d.in_channels == mx.conv_dim == I + 2 * G * N
    assert mx.norm.group_size == I // G and mx.norm.variance_epsilon == model.config.layer_norm_epsilon
    # 5.25: the mixer clamps to config.time_step_limit (5.24: (time_step_min, inf))
    assert tuple(mx.time_step_limit) == tuple(model.config.time_step_limit) == TIME_STEP_LIMIT
    assert model.config.time_step_min == 0.001 != TIME_STEP_LIMIT[0]
    assert model.lm_head.weight is not model.model.embeddings.weight            # tie_word_embeddings=True
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        names = set(load_file(Path(d) / "model.safetensors"))
        assert "lm_head.weight" in names and all(n.startswith("backbone.") for n in names - {"lm_head.weight"})
        assert {"backbone." + k[6:] for k, _ in model.named_parameters() if k.startswith("model.")} | \
            {"lm_head.weight"} == names


def main(argv=None):
    return run_cli(argv, __doc__.splitlines()[0], lambda out: write_models(out) + write_train(out),
                   checks=checks_on_conventions)


if __name__ == "__main__":
    sys.exit(main())
