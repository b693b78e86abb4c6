"""The NemotronH hybrid fixtures (tools/make_hybrid_fixtures.py) re-checked on the host with transformers:
stored logits / Mamba caches / attention KV caches / greedy continuations, the hybrid_override_pattern copy,
the bf16/f16 copies, the training fixtures, and the conventions the generator's docstring states (on-disk
names, no tying, dt clamped to time_step_limit on the chunked path only, GQA without RoPE, relu2 MLP) against
float64 numpy."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from tests.unit._fixture_checks import (MODELS, TOL, TRAIN, check_folders_present_and_small,  # noqa: E402
                                        check_low_precision_copy, check_training_fixture, greedy_config)
from tests.unit._fixture_checks import read_config as _cfg  # noqa: E402
from tests.unit._fixture_checks import rel as _rel  # noqa: E402

HF_DIRS = ["nemotronh-mamf-tied", "nemotronh-mamf-tied-pattern", "nemotronh-mamf-untied",
           "nemotronh-mamf-untied-bf16", "nemotronh-mamf-untied-f16"]
TRAIN_DIRS = ["nemotronh-mamf-untied", "nemotronh-amfm-untied"]
MAMF = ["linear_attention", "full_attention", "mlp", "linear_attention"]


def _load(folder, **kw):
    return transformers.NemotronHForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()


def _caches(cache, cfg):
    m = [i for i, t in enumerate(cfg.layers_block_type) if t == "linear_attention"]
    a = [i for i, t in enumerate(cfg.layers_block_type) if t == "full_attention"]
    return dict(conv_state=np.stack([cache.get_conv_state(i)[0].numpy() for i in m]),
                ssm_state=np.stack([cache.get_recurrent_state(i)[0].numpy() for i in m]),
                key_cache=np.stack([cache.layers[i].keys[0].numpy() for i in a]),
                value_cache=np.stack([cache.layers[i].values[0].numpy() for i in a])), m, a


def _greedy(model, ids):
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=greedy_config())
    return gen.sequences[0, ids.shape[1]:].tolist(), torch.stack(gen.logits, 0)[:, 0].numpy()


LIMIT = (0.05, 4.0)     # the fixtures' time_step_limit: both bounds bite (tools/make_hybrid_fixtures.py)
NO_CLAMP = (0.0, float("inf"))


class _Limit:
    """The chunked path clamping dt to `limit` instead of the mixer's time_step_limit."""

    def __init__(self, model, limit):
        self.mx = [l.mixer for l in model.model.layers if l.block_type == "linear_attention"]
        self.limit = tuple(limit)

    def __enter__(self):
        self.saved = [m.time_step_limit for m in self.mx]
        for m in self.mx:
            m.time_step_limit = self.limit

    def __exit__(self, *exc):
        for m, v in zip(self.mx, self.saved):
            m.time_step_limit = v


def test_fixture_folders_present_and_small():
    check_folders_present_and_small([MODELS / n for n in HF_DIRS] + [TRAIN / n for n in TRAIN_DIRS])


# ---------------------------------------------------------------------------------------------
# Model folders: logits, caches, greedy continuation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HF_DIRS)
def test_logits_caches_and_greedy_match_transformers(name):
    folder = MODELS / name
    exp = np.load(folder / "expected.npz")
    info = json.loads((folder / "fixture.json").read_text())
    model = _load(folder)
    cfg = model.config
    assert cfg.layers_block_type == MAMF
    ids = torch.from_numpy(exp["prompt_ids"])[None]
    P, V = ids.shape[1], cfg.vocab_size
    assert P == 40 and 0 < P % cfg.chunk_size and P > 32
    with torch.no_grad():
        out = model(ids, use_cache=True)
    assert exp["logits"].shape == (P, V)
    # relative to max(1, max|logits|) as below (logits of magnitude 7-22: rounding across
    # transformers releases reached 1.5e-5 absolute, 2e-6 relative)
    assert _rel(out.logits[0].numpy(), exp["logits"]) <= TOL
    got, m, a = _caches(out.cache, cfg)
    assert (m, a) == (info["mamba_layers"], info["attention_layers"]) == ([0, 3], [1])
    I, G, N, H = cfg.mamba_num_heads * cfg.mamba_head_dim, cfg.n_groups, cfg.ssm_state_size, cfg.mamba_num_heads
    shapes = dict(conv_state=(2, I + 2 * G * N, cfg.conv_kernel), ssm_state=(2, H, cfg.mamba_head_dim, N),
                  key_cache=(1, cfg.num_key_value_heads, P, cfg.head_dim),
                  value_cache=(1, cfg.num_key_value_heads, P, cfg.head_dim))
    for k, shape in shapes.items():
        assert exp[k].shape == shape == tuple(info[k + "_shape"]), k
        assert _rel(got[k], exp[k]) <= TOL, k
    new, glog = _greedy(model, ids)
    assert new == exp["greedy_ids"].tolist()
    assert _rel(glog, exp["greedy_logits"]) <= TOL          # |logits| reach ~30: relative to max(1, max|.|)
    assert np.abs(exp["greedy_logits"][0] - exp["logits"][-1]).max() <= TOL
    assert (np.argmax(exp["greedy_logits"], -1) == exp["greedy_ids"]).all()
    top2 = np.sort(exp["greedy_logits"], -1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() >= 1e-3          # greedy choices are not rounding-decided


def test_pattern_copy_is_the_same_model_with_hybrid_override_pattern():
    a, b = MODELS / "nemotronh-mamf-tied", MODELS / "nemotronh-mamf-tied-pattern"
    ca, cb = _cfg(a), _cfg(b)
    assert cb["hybrid_override_pattern"] == "M*-M" and "layers_block_type" not in cb
    assert ca["layers_block_type"] == MAMF and "hybrid_override_pattern" not in ca
    assert {k: v for k, v in ca.items() if k != "layers_block_type"} == \
        {k: v for k, v in cb.items() if k != "hybrid_override_pattern"}
    for f in ("model.safetensors", "expected.npz"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert _load(b).config.layers_block_type == MAMF


@pytest.mark.parametrize("suffix,dtype", [("-bf16", torch.bfloat16), ("-f16", torch.float16)])
def test_low_precision_copies_hold_the_rounded_f32_weights(suffix, dtype):
    check_low_precision_copy("nemotronh-mamf-untied", suffix, dtype)


def test_configs_names_and_tying():
    for name in HF_DIRS:
        c = _cfg(MODELS / name)
        assert c["model_type"] == "nemotron_h" and c["architectures"] == ["NemotronHForCausalLM"]
        assert c["mlp_hidden_act"] == "relu2" and c["n_groups"] == 2 and c["conv_kernel"] == 4
        assert (c["num_attention_heads"], c["num_key_value_heads"]) == (4, 2) and c["head_dim"] in (8, 12)
        assert c["mamba_head_dim"] & (c["mamba_head_dim"] - 1) != 0               # not a power of two
        assert c["layer_norm_epsilon"] == 1e-5
        # the clamp is time_step_limit; time_step_min (init only since transformers 5.25) differs
        # from its low bound, so an engine that kept 5.24's floor at time_step_min fails the fixtures
        assert c["time_step_limit"] == list(LIMIT) and c["time_step_min"] == 0.001
        assert 90 <= c["vocab_size"] <= 101
        sd = load_file(MODELS / name / "model.safetensors")
        L = 4
        names = {"backbone.embeddings.weight", "backbone.norm_f.weight", "lm_head.weight"}
        names |= {f"backbone.layers.{i}.norm.weight" for i in range(L)}
        for i in (0, 3):
            names |= {f"backbone.layers.{i}.mixer.{k}" for k in (
                "in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                "out_proj.weight")}
            if c["use_bias"]:
                names |= {f"backbone.layers.{i}.mixer.in_proj.bias", f"backbone.layers.{i}.mixer.out_proj.bias"}
        names |= {f"backbone.layers.1.mixer.{p}_proj.weight" for p in "qkvo"}
        names |= {"backbone.layers.2.mixer.up_proj.weight", "backbone.layers.2.mixer.down_proj.weight"}
        assert set(sd) == names, set(sd) ^ names
    tied = MODELS / "nemotronh-mamf-tied"
    assert _cfg(tied)["tie_word_embeddings"] is True and _cfg(MODELS / "nemotronh-mamf-untied")["use_bias"]
    sd = load_file(tied / "model.safetensors")
    assert torch.equal(sd["lm_head.weight"], sd["backbone.embeddings.weight"])
    model = _load(tied)
    # transformers (5.24, 5.25) does not tie NemotronH: lm_head is its own parameter, loaded from the file
    assert model.lm_head.weight is not model.model.embeddings.weight
    assert torch.equal(model.lm_head.weight, model.model.embeddings.weight)
    assert not torch.equal(*(load_file(MODELS / "nemotronh-mamf-untied" / "model.safetensors")[k]
                             for k in ("lm_head.weight", "backbone.embeddings.weight")))


# ---------------------------------------------------------------------------------------------
# dt clamp: the chunked path clamps dt to time_step_limit, the decode path does not
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nemotronh-mamf-tied", "nemotronh-mamf-untied"])
def test_fixtures_are_sensitive_to_the_prefill_dt_clamp(name):
    """transformers >= 5.25 clamps NemotronH's chunked dt to config.time_step_limit (5.24: to
    [time_step_min, inf)); the stored logits hold that clamp, and each bound of it matters."""
    folder = MODELS / name
    exp = np.load(folder / "expected.npz")
    info = json.loads((folder / "fixture.json").read_text())
    stored = info["dt_limit_effect"]
    model = _load(folder)
    cfg = model.config
    assert tuple(cfg.time_step_limit) == LIMIT == tuple(info["time_step_limit"])
    for l in (0, 3):
        assert tuple(model.model.layers[l].mixer.time_step_limit) == LIMIT
    ids = torch.from_numpy(exp["prompt_ids"])[None]

    def prompt_logits(limit):
        with _Limit(model, limit), torch.no_grad():
            return model(ids).logits[0].numpy()

    with torch.no_grad():
        full = model(ids).logits[0].numpy()
        pre = model(ids[:, :-1], use_cache=True)
        step = model(ids[:, -1:], cache=pre.cache, use_cache=True).logits[0, -1].numpy()
        with _Limit(model, NO_CLAMP):
            full_nc = model(ids).logits[0].numpy()
            pre = model(ids[:, :-1], use_cache=True)
            step_nc = model(ids[:, -1:], cache=pre.cache, use_cache=True).logits[0, -1].numpy()
    assert _rel(full, exp["logits"]) <= TOL
    # without the clamp the decode step equals the full prefill: the decode path never clamps ...
    assert np.abs(full_nc[-1] - step_nc).max() <= 1e-4
    # ... and with it the two differ
    assert np.abs(full[-1] - step).max() > 1e-2
    # the clamp, each of its bounds alone, and 5.24's rule in its place move the stored prompt
    # logits by far more than any parity tolerance (1e-4; and as much as the generator measured)
    lo, hi = LIMIT
    effects = {"prompt_logits": full_nc,
               "prompt_logits_without_low": prompt_logits((0.0, hi)),
               "prompt_logits_without_high": prompt_logits((lo, float("inf"))),
               "prompt_logits_with_5_24_rule": prompt_logits((cfg.time_step_min, float("inf")))}
    for key, logits in effects.items():
        effect = float(np.abs(logits - exp["logits"]).max())
        assert effect > 0.5 and abs(effect - stored[key]) <= 1e-3, (key, effect, stored[key])
    assert float(np.abs(full_nc - exp["logits"]).max()) > 5.0


# ---------------------------------------------------------------------------------------------
# The attention and MLP conventions against float64 numpy
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nemotronh-mamf-tied", "nemotronh-mamf-untied"])
def test_attention_is_gqa_without_rope_and_mlp_is_relu2(name):
    folder = MODELS / name
    exp = np.load(folder / "expected.npz")
    model = _load(folder)
    cfg = model.config
    ins = {}
    for i in (1, 2):
        model.model.layers[i].mixer.register_forward_hook(
            lambda mod, a, kw, out, i=i: ins.__setitem__(i, (a[0] if a else kw["hidden_states"], out)),
            with_kwargs=True)
    with torch.no_grad():
        model(torch.from_numpy(exp["prompt_ids"])[None])
    attn = model.model.layers[1].mixer
    x = ins[1][0][0].double().numpy()
    w = {k: v.detach().double().numpy() for k, v in attn.named_parameters()}
    T, Hq, Hk, hd = x.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = (x @ w["q_proj.weight"].T).reshape(T, Hq, hd)
    k = (x @ w["k_proj.weight"].T).reshape(T, Hk, hd)
    v = (x @ w["v_proj.weight"].T).reshape(T, Hk, hd)
    assert _rel(exp["key_cache"][0], k.transpose(1, 0, 2)) <= TOL                 # raw projections: no RoPE
    assert _rel(exp["value_cache"][0], v.transpose(1, 0, 2)) <= TOL
    ys = []
    for h in range(Hq):
        kv = h // (Hq // Hk)
        s = q[:, h] @ k[:, kv].T * hd ** -0.5
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        ys.append((p / p.sum(-1, keepdims=True)) @ v[:, kv])
    ref = np.stack(ys, 1).reshape(T, Hq * hd) @ w["o_proj.weight"].T
    got = ins[1][1][0][0].double().numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    mlp = model.model.layers[2].mixer
    x = ins[2][0][0].double().numpy()
    up = x @ mlp.up_proj.weight.detach().double().numpy().T
    ref = (np.maximum(up, 0) ** 2) @ mlp.down_proj.weight.detach().double().numpy().T
    got = ins[2][1][0].double().numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# Training fixtures
# ---------------------------------------------------------------------------------------------

DECAY = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "out_proj.weight", "q_proj.weight",
         "k_proj.weight", "v_proj.weight", "o_proj.weight", "up_proj.weight", "down_proj.weight")


@pytest.mark.parametrize("name", TRAIN_DIRS)
def test_training_fixture_matches_torch(name):
    folder = TRAIN / name
    exp = np.load(folder / "expected.npz")
    model = _load(folder).train()
    assert model.config.hybrid_override_pattern == {"nemotronh-mamf-untied": "M*-M",
                                                    "nemotronh-amfm-untied": "*M-M"}[name]
    check_training_fixture(model, exp, DECAY, decay_is_2d=True)
