"""The Mamba-2 fixtures (tools/make_mamba2_fixtures.py) re-checked on the host with transformers:
stored logits / caches / greedy continuations, the bf16/f16 copies, the mamba_ssm-layout copies
(safetensors and torch.save .bin), the training fixtures, and the transformers conventions the
generator's docstring states (in_proj row order, conv channels, head->group map, gated-norm groups,
cache layouts, no dt clamp on the decode path) against a float64 numpy re-implementation."""
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from tests.unit._fixture_checks import (MODELS, TOL, TRAIN, check_folders_present_and_small,  # noqa: E402
                                        check_low_precision_copy, check_training_fixture, greedy_config)
from tests.unit._fixture_checks import read_config as _cfg  # noqa: E402
from tests.unit._fixture_checks import rel as _rel  # noqa: E402

HF_DIRS = ["mamba2-g1-tied", "mamba2-g2-untied", "mamba2-g2-untied-bf16", "mamba2-g2-untied-f16"]
SSM_DIRS = ["mamba2-g1-tied-ssm", "mamba2-g1-tied-ssm-bin"]
TRAIN_DIRS = ["mamba2-g1-untied", "mamba2-g2-untied"]


def _load(folder, **kw):
    return transformers.Mamba2ForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()


def _states(cache, L):
    conv = np.stack([cache.get_conv_state(i)[0].numpy() for i in range(L)])
    ssm = np.stack([cache.get_recurrent_state(i)[0].numpy() for i in range(L)])
    return conv, ssm


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, np.abs(b).max()))


def test_fixture_folders_present_and_small():
    check_folders_present_and_small([MODELS / n for n in HF_DIRS + SSM_DIRS] + [TRAIN / n for n in TRAIN_DIRS])


# ---------------------------------------------------------------------------------------------
# HF folders: logits, caches, greedy continuation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HF_DIRS)
def test_logits_states_and_greedy_match_transformers(name):
    folder = MODELS / name
    exp = np.load(folder / "expected.npz")
    model = _load(folder)
    cfg = model.config
    ids = torch.from_numpy(exp["prompt_ids"])[None]
    P, V, L = ids.shape[1], cfg.vocab_size, cfg.num_hidden_layers
    I, G, N, H = cfg.expand * cfg.hidden_size, cfg.n_groups, cfg.state_size, cfg.num_heads
    with torch.no_grad():
        out = model(ids, use_cache=True)
    assert exp["logits"].shape == (P, V)
    assert np.abs(out.logits[0].numpy() - exp["logits"]).max() <= TOL
    conv, ssm = _states(out.cache, L)
    assert exp["conv_state"].shape == (L, I + 2 * G * N, cfg.conv_kernel)
    assert exp["ssm_state"].shape == (L, H, cfg.head_dim, N)
    assert _rel(conv, exp["conv_state"]) <= TOL and _rel(ssm, exp["ssm_state"]) <= TOL
    with torch.no_grad():
        gen = model.generate(ids, generation_config=greedy_config())
    assert gen.sequences[0, P:].tolist() == exp["greedy_ids"].tolist()
    glog = torch.stack(gen.logits, 0)[:, 0].numpy()
    assert np.abs(glog - exp["greedy_logits"]).max() <= TOL
    assert (np.argmax(exp["greedy_logits"], -1) == exp["greedy_ids"]).all()
    top2 = np.sort(exp["greedy_logits"], -1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() >= 1e-3          # greedy choices are not rounding-decided


@pytest.mark.parametrize("suffix,dtype", [("-bf16", torch.bfloat16), ("-f16", torch.float16)])
def test_low_precision_copies_hold_the_rounded_f32_weights(suffix, dtype):
    check_low_precision_copy("mamba2-g2-untied", suffix, dtype)


def test_hf_configs_have_what_the_engine_needs():
    for name in HF_DIRS:
        c = _cfg(MODELS / name)
        assert c["model_type"] == "mamba2" and c["architectures"] == ["Mamba2ForCausalLM"]
        assert c["num_heads"] * c["head_dim"] == c["expand"] * c["hidden_size"]
        assert c["head_dim"] & (c["head_dim"] - 1) != 0                     # not a power of two
        assert c["num_heads"] % c["n_groups"] == 0 and 8 <= c["state_size"] <= 16
        assert c["conv_kernel"] == 4 and c["use_conv_bias"] is True and c["num_hidden_layers"] == 2
        assert c["layer_norm_epsilon"] == 1e-5 and c["residual_in_fp32"] is True
        assert 21 % c["chunk_size"] != 0
        # transformers 5.24 writes inf as {"__float__": "Infinity"}
        assert c["time_step_limit"] == [0.0, {"__float__": "Infinity"}]
        exp = np.load(MODELS / name / "expected.npz")
        assert len(exp["prompt_ids"]) == 21
    g1, g2 = _cfg(MODELS / "mamba2-g1-tied"), _cfg(MODELS / "mamba2-g2-untied")
    assert (g1["n_groups"], g1["tie_word_embeddings"], g1["use_bias"]) == (1, True, False)
    assert (g2["n_groups"], g2["tie_word_embeddings"], g2["use_bias"]) == (2, False, True)
    assert "lm_head.weight" not in load_file(MODELS / "mamba2-g1-tied" / "model.safetensors")
    sd2 = load_file(MODELS / "mamba2-g2-untied" / "model.safetensors")
    assert {"backbone.layers.0.mixer.in_proj.bias", "backbone.layers.0.mixer.out_proj.bias",
            "lm_head.weight"} <= sd2.keys()
    assert sd2["backbone.layers.0.mixer.dt_bias"][1] == 21.5                 # softplus's x > 20 branch


# ---------------------------------------------------------------------------------------------
# mamba_ssm-layout copies
# ---------------------------------------------------------------------------------------------

def _hf_to_ssm(hf_sd):
    out = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf_sd.items()}
    out.setdefault("lm_head.weight", out["backbone.embedding.weight"])      # tied: mamba_ssm saves it anyway
    return out


def _ssm_names(L):
    names = {"backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight"}
    for i in range(L):
        names.add(f"backbone.layers.{i}.norm.weight")
        names |= {f"backbone.layers.{i}.mixer.{k}" for k in (
            "in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
            "out_proj.weight")}
    return names


def test_ssm_safetensors_equal_hf_tensors_under_the_name_map():
    hf = load_file(MODELS / "mamba2-g1-tied" / "model.safetensors")
    ssm = load_file(MODELS / "mamba2-g1-tied-ssm" / "model.safetensors")
    assert set(ssm) == _ssm_names(2)
    ref = _hf_to_ssm(hf)
    assert ssm.keys() == ref.keys()
    for k in ssm:
        assert ssm[k].dtype == torch.float32 and torch.equal(ssm[k], ref[k]), k


def test_ssm_bin_is_a_torch_zip_with_the_same_tensors():
    path = MODELS / "mamba2-g1-tied-ssm-bin" / "pytorch_model.bin"
    assert zipfile.is_zipfile(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("/data.pkl") for n in names) and any("/data/" in n for n in names)
    sd = torch.load(path, weights_only=True, map_location="cpu")
    ref = load_file(MODELS / "mamba2-g1-tied-ssm" / "model.safetensors")
    assert sd.keys() == ref.keys()
    for k in sd:
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], ref[k]), k
    # as in mamba_ssm's tied state_dict, lm_head.weight is the embedding's storage, not a copy
    assert sd["lm_head.weight"].untyped_storage().data_ptr() == \
        sd["backbone.embedding.weight"].untyped_storage().data_ptr()


@pytest.mark.parametrize("name", SSM_DIRS)
def test_ssm_config_maps_onto_the_hf_model(name):
    folder = MODELS / name
    c = _cfg(folder)
    assert c["ssm_cfg"]["layer"] == "Mamba2" and c["d_intermediate"] == 0
    assert c["attn_layer_idx"] == [] and c["attn_cfg"] == {}
    assert c["rms_norm"] and c["residual_in_fp32"] and c["fused_add_norm"] and c["tie_embeddings"]
    assert c["vocab_size"] % c["pad_vocab_size_multiple"] == 0 and c["vocab_size"] % 8 == 0
    assert (folder / "expected.npz").read_bytes() == (MODELS / "mamba2-g1-tied" / "expected.npz").read_bytes()
    s = c["ssm_cfg"]
    hf = _cfg(MODELS / "mamba2-g1-tied")
    mapped = dict(hidden_size=c["d_model"], num_hidden_layers=c["n_layer"], vocab_size=c["vocab_size"],
                  state_size=s["d_state"], conv_kernel=s["d_conv"], expand=s["expand"], head_dim=s["headdim"],
                  num_heads=s["expand"] * c["d_model"] // s["headdim"], n_groups=s["ngroups"],
                  chunk_size=s["chunk_size"], tie_word_embeddings=c["tie_embeddings"])
    assert all(hf[k] == v for k, v in mapped.items()), {k: (hf[k], v) for k, v in mapped.items()}
    # load the mamba_ssm tensors into an HF model built from the mapped config: same logits
    if name.endswith("-bin"):
        sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    else:
        sd = load_file(folder / "model.safetensors")
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        **mapped, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5)).eval()
    hf_sd = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(hf_sd, strict=False)
    assert not missing and not unexpected
    exp = np.load(folder / "expected.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(exp["prompt_ids"])[None]).logits[0].numpy()
    assert np.abs(logits - exp["logits"]).max() <= TOL


# ---------------------------------------------------------------------------------------------
# Training fixtures
# ---------------------------------------------------------------------------------------------

DECAY = ("embeddings.weight", "lm_head.weight", "in_proj.weight", "out_proj.weight")


@pytest.mark.parametrize("name", TRAIN_DIRS)
def test_training_fixture_matches_torch(name):
    folder = TRAIN / name
    exp = np.load(folder / "expected.npz")
    model = _load(folder).train()
    assert model.config.n_groups == {"mamba2-g1-untied": 1, "mamba2-g2-untied": 2}[name]
    check_training_fixture(model, exp, DECAY)


# ---------------------------------------------------------------------------------------------
# The conventions the generator documents
# ---------------------------------------------------------------------------------------------

def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _mixer_numpy(mx, u):
    """Sequential float64 Mamba-2 mixer written from the documented conventions. u [T, D] -> [T, D],
    plus the final conv state [CD, K] and ssm state [H, P, N]."""
    g = {k: v.detach().double().numpy() for k, v in mx.named_parameters()}
    H, P, N, G = mx.num_heads, mx.head_dim, mx.ssm_state_size, mx.n_groups
    I, K = H * P, mx.conv_kernel_size
    proj = u @ g["in_proj.weight"].T + g.get("in_proj.bias", 0.0)
    z, xbc, dt_raw = proj[:, :I], proj[:, I:2 * I + 2 * G * N], proj[:, 2 * I + 2 * G * N:]   # [z|x|B|C|dt]
    assert dt_raw.shape[1] == H
    T = u.shape[0]
    window = np.zeros((xbc.shape[1], K))                       # conv state: newest last
    h = np.zeros((H, P, N))
    A, D = -np.exp(g["A_log"]), g["D"]
    ys = []
    for t in range(T):
        window = np.concatenate([window[:, 1:], xbc[t][:, None]], axis=1)
        c = (window * g["conv1d.weight"][:, 0, :]).sum(-1) + g["conv1d.bias"]
        c = c / (1 + np.exp(-c))
        x, B, C = c[:I].reshape(H, P), c[I:I + G * N].reshape(G, N), c[I + G * N:].reshape(G, N)
        dt = _softplus(dt_raw[t] + g["dt_bias"])
        grp = np.arange(H) // (H // G)                         # head -> B/C group
        h = h * np.exp(dt * A)[:, None, None] + (dt[:, None] * x)[:, :, None] * B[grp][:, None, :]
        y = (h * C[grp][:, None, :]).sum(-1) + D[:, None] * x
        y = y.reshape(I) * (z[t] / (1 + np.exp(-z[t])))        # gate first (norm_before_gate=False)
        yg = y.reshape(G, I // G)                              # then RMS over n_groups groups
        y = (yg / np.sqrt((yg ** 2).mean(-1, keepdims=True) + mx.layer_norm_epsilon)).reshape(I)
        y = y * g["norm.weight"]
        ys.append(y @ g["out_proj.weight"].T + g.get("out_proj.bias", 0.0))
    return np.stack(ys), window, h


@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied"])
def test_documented_conventions_reproduce_the_first_mixer(name):
    folder = MODELS / name
    exp = np.load(folder / "expected.npz")
    model = _load(folder)
    blk = model.backbone.layers[0]
    with torch.no_grad():
        u = blk.norm(model.backbone.embeddings(torch.from_numpy(exp["prompt_ids"])[None]))
        ref = blk.mixer(u)[0].double().numpy()
    got, conv, ssm = _mixer_numpy(blk.mixer, u[0].double().numpy())
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert _rel(exp["conv_state"][0], conv) <= TOL
    assert _rel(exp["ssm_state"][0], ssm) <= 1e-5


def test_decode_path_does_not_clamp_dt_to_time_step_limit():
    """Prefill (chunked) clamps dt to time_step_limit, the 1-token decode path does not: with a limit
    the two disagree, with the default (0, inf) -- the fixtures' -- they agree."""
    folder = MODELS / "mamba2-g1-tied"
    ids = torch.from_numpy(np.load(folder / "expected.npz")["prompt_ids"])[None]
    diffs = {}
    for limit in ((0.0, float("inf")), (0.0, 0.05)):
        model = _load(folder, time_step_limit=limit)
        with torch.no_grad():
            full = model(ids).logits[0, -1]
            pre = model(ids[:, :-1], use_cache=True)
            step = model(ids[:, -1:], cache=pre.cache, use_cache=True).logits[0, -1]
        diffs[limit[1]] = float((full - step).abs().max())
    assert diffs[float("inf")] <= TOL
    assert diffs[0.05] > 1e-2, diffs
