"""mamba_ssm hybrids on the host: the config (attn_layer_idx, attn_cfg, d_intermediate -> a
schedule), the Block-name mapping, the committed fixtures against their reference, the reference's
SSM mixers against transformers' torch mixers, and MBJS refusing attention layers by name."""
import json
import math

import numpy as np
import pytest

from py_engine.io import hf_names, mbjs
from py_engine.io.layouts import external_name, internal_name, writes_tied_head
from py_engine.io.safetensors_format import parse_header
from py_engine.models.config import MambaConfig
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "mamba_ssm"
NAMES = ["m2-attn-mlp-tied", "m1-attn-untied"]


def _conf(name):
    return json.loads((FIX / name / "config.json").read_text())


def _base(**kw):
    d = {"d_model": 32, "n_layer": 3, "vocab_size": 100, "d_intermediate": 0,
         "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "headdim": 8}, "attn_layer_idx": [1],
         "attn_cfg": {"num_heads": 4, "num_heads_kv": 2, "causal": True}, "rms_norm": True,
         "tie_embeddings": True}
    d.update(kw)
    return d


def test_schedule_and_sizes_from_a_mamba_ssm_config():
    cfg = MambaConfig.from_hf_dict(_base(d_intermediate=130, attn_cfg={
        "num_heads": 4, "num_heads_kv": 2, "head_dim": 12, "rotary_emb_dim": 6,
        "rotary_emb_base": 500.0, "causal": True, "softmax_scale": 12 ** -0.5}))
    assert cfg.layers == ["mamba2", "gated_mlp", "attention", "gated_mlp", "mamba2", "gated_mlp"]
    assert cfg.model_type == "mamba2" and cfg.checkpoint_layout == "mamba_ssm"
    assert cfg.mlp_intermediate_size == 256            # GatedMLP rounds up to 128s
    assert (cfg.attention_heads, cfg.attention_kv_heads, cfg.attention_head_dim) == (4, 2, 12)
    assert cfg.attention_qkv_bias and cfg.attention_out_bias     # MHA's defaults
    from py_engine.nn.attention import spec
    assert spec(cfg).rope and spec(cfg).rot == 6 and spec(cfg).theta == 500.0
    assert cfg.vocab_size == 104                       # padded to a multiple of 8
    # written back as mamba_ssm's config and read again: the same model
    d = cfg.to_hf_dict()
    assert d["attn_layer_idx"] == [1] and d["d_intermediate"] == 256 and d["n_layer"] == 3
    assert d["attn_cfg"]["rotary_emb_dim"] == 6 and d["ssm_cfg"]["layer"] == "Mamba2"
    assert MambaConfig.from_hf_dict(json.loads(json.dumps(d))) == cfg


def test_rotary_dims_survive_the_float_factor():
    # int(Dh * rot / Dh) can land one below rot in floating point; every even rot must round-trip
    from py_engine.nn.attention import spec
    for Dh in (6, 48, 49, 96, 100, 128):
        for rot in range(2, min(Dh, 64) + 1, 2):
            cfg = MambaConfig.from_hf_dict(_base(d_model=Dh, ssm_cfg={
                "layer": "Mamba2", "d_state": 8, "headdim": Dh}, attn_cfg={
                "num_heads": 1, "head_dim": Dh, "rotary_emb_dim": rot, "causal": True}))
            assert spec(cfg).rot == rot, (Dh, rot)


@pytest.mark.parametrize("attn,match", [
    ({"num_heads": 4}, "attn_cfg.causal is False"),
    ({"num_heads": 4, "causal": True, "d_conv": 4}, "attn_cfg.d_conv 4"),
    ({"num_heads": 4, "causal": True, "mlp_dim": 64}, "attn_cfg.mlp_dim 64"),
    ({"num_heads": 4, "causal": True, "rotary_emb_dim": 4, "rotary_emb_interleaved": True},
     "rotary_emb_interleaved"),
    ({"num_heads": 4, "causal": True, "softmax_scale": 1.0}, "softmax_scale 1.0 is not"),
    ({"num_heads": 4, "causal": True, "window_size": 8}, r"keys \['window_size'\]"),
    ({"causal": True}, "attn_cfg.num_heads is missing"),
    ({"num_heads": 4, "num_heads_kv": 3, "causal": True}, "not a multiple of"),
])
def test_attention_settings_no_mixer_computes_are_refused_by_name(attn, match):
    with pytest.raises(ValueError, match=match):
        MambaConfig.from_hf_dict(_base(attn_cfg=attn), source="x/config.json")


def test_bad_attention_indices_are_refused():
    with pytest.raises(ValueError, match=r"attn_layer_idx entry 3 is not a layer index in 0\.\.2"):
        MambaConfig.from_hf_dict(_base(attn_layer_idx=[3]))
    with pytest.raises(ValueError, match="lists a layer twice"):
        MambaConfig.from_hf_dict(_base(attn_layer_idx=[1, 1]))


@pytest.mark.parametrize("name", NAMES)
def test_fixture_tensors_are_what_the_config_expects(name):
    cfg = MambaConfig.from_hf_dict(_conf(name))
    raw = (FIX / name / "model.safetensors").read_bytes()
    infos = parse_header(raw, len(raw), name).tensors
    mapped = {internal_name(t.name, cfg): tuple(t.shape) for t in infos}
    hf_names.check_tensors(cfg, mapped, name)           # raises listing every mismatch
    # the engine's names map back onto exactly the file's names (export == import)
    want = hf_names.expected_tensors(cfg)
    if cfg.tie_word_embeddings and writes_tied_head(cfg.model_type, cfg):
        want[hf_names.LM_HEAD] = want[hf_names.EMBED]
    assert {external_name(cfg.model_type, n, cfg) for n in want} == {t.name for t in infos}


def test_block_names_move_between_indices_only_with_an_mlp():
    cfg = MambaConfig.from_hf_dict(_conf("m2-attn-mlp-tied"))
    assert internal_name("backbone.layers.1.norm2.weight", cfg) == "backbone.layers.3.norm.weight"
    assert internal_name("backbone.layers.1.mlp.fc1.weight", cfg) == \
        "backbone.layers.3.mixer.fc1.weight"
    assert internal_name("backbone.layers.2.mixer.in_proj.weight", cfg) == \
        "backbone.layers.4.mixer.in_proj.weight"
    plain = MambaConfig.from_hf_dict(_conf("m1-attn-untied"))
    assert internal_name("backbone.layers.2.mixer.in_proj.weight", plain) == \
        "backbone.layers.2.mixer.in_proj.weight"


@pytest.mark.parametrize("name", NAMES)
def test_committed_fixture_is_the_reference_output(name):
    import torch
    from safetensors.torch import load_file
    from tools.make_mamba_ssm_hybrid_fixtures import forward
    conf = _conf(name)
    exp = np.load(FIX / name / "expected.npz")
    W = {k: v.double() for k, v in load_file(FIX / name / "model.safetensors").items()}
    if conf["tie_embeddings"]:
        assert torch.equal(W["lm_head.weight"], W["backbone.embedding.weight"])
    with torch.no_grad():
        logits, st = forward(conf, W, torch.tensor(exp["prompt_ids"]))
    assert np.abs(logits.numpy() - exp["logits"]).max() < 1e-5
    for key, vals in st.items():
        if vals:
            assert np.abs(torch.stack(vals).numpy() - exp[key]).max() < 1e-5
    assert len(exp["prompt_ids"]) > 32          # longer than one attention tile


def test_reference_ssm_mixers_equal_transformers():
    """The fixture reference's Mamba-2 / Mamba-1 recurrences against transformers' torch
    mixers (the parity references of the pure families) on the fixtures' own weights."""
    import torch
    from safetensors.torch import load_file
    from transformers import Mamba2Config, MambaConfig as HFMambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
    from tools.make_mamba_ssm_hybrid_fixtures import mamba1, mamba2
    torch.manual_seed(0)
    for name, layer in (("m2-attn-mlp-tied", 0), ("m1-attn-untied", 1)):
        conf = _conf(name)
        s, D = conf["ssm_cfg"], conf["d_model"]
        W = {k: v.double() for k, v in load_file(FIX / name / "model.safetensors").items()}
        p = f"backbone.layers.{layer}.mixer."
        mine = {k[len(p):]: v for k, v in W.items() if k.startswith(p)}
        h = torch.randn(1, 23, D, dtype=torch.float64)
        if s["layer"] == "Mamba2":
            hc = Mamba2Config(hidden_size=D, num_heads=s["expand"] * D // s["headdim"],
                              head_dim=s["headdim"], n_groups=s["ngroups"],
                              state_size=s["d_state"], expand=s["expand"],
                              conv_kernel=s["d_conv"], chunk_size=s["chunk_size"],
                              layer_norm_epsilon=1e-5, use_bias=False, use_conv_bias=True,
                              time_step_limit=(0.0, float("inf")))
            mixer = Mamba2Mixer(hc, 0).double()
            mixer.load_state_dict(mine)
            with torch.no_grad():
                ref = mixer(h)
                out, _, _ = mamba2(conf, W, p, h[0])
        else:
            hc = HFMambaConfig(hidden_size=D, state_size=s["d_state"], expand=s["expand"],
                               conv_kernel=s["d_conv"], time_step_rank=s["dt_rank"],
                               use_bias=False, use_conv_bias=True)
            mixer = MambaMixer(hc, 0).double()
            mixer.load_state_dict(mine)
            with torch.no_grad():
                ref = mixer(h)
                out, _, _ = mamba1(conf, W, p, h[0])
        ref = ref[0] if isinstance(ref, tuple) else ref
        # transformers' mixers run parts of their math in float32 (its gated norm, the SSD
        # chunk scan) even for float64 modules: agreement to 1e-6 is the same math
        assert torch.abs(out - ref[0]).max() < 1e-6, (name, float(torch.abs(out - ref[0]).max()))


def test_mbjs_refuses_grouped_query_attention_by_name():
    """MBJS attention is npm's AttentionBlock (tests/unit/test_mbjs_attention.py): one K/V head
    per query head, and no head count in the file."""
    cfg = MambaConfig.from_hf_dict(_conf("m1-attn-untied"))
    with pytest.raises(ValueError, match="layer 0 is attention with 1 key/value heads for 2 query "
                                         "heads \\(grouped-query\\), and the npm engine's "
                                         "AttentionBlock has one per query head"):
        hf_names.mbjs_plan(cfg)
    D = 8
    attn5 = [3 * D * D, 3 * D, D * D, D, D]
    numels = [10 * D] + attn5 + [D]
    head = mbjs.build_header(numels, ["attention"], 2)
    size = len(head) + 4 * sum(numels)
    layout = mbjs.parse_header(head + b"\0" * (size - len(head)), size, "a.bin")
    with pytest.raises(ValueError, match="a.bin: layer 0 is attention and MBJS does not store "
                                         "its head count: give attention_heads"):
        mbjs.infer_config(layout, {"attention_ffn": False})


def test_gated_mlp_is_not_a_nemotron_h_block():
    from py_engine.train.init import preset_config
    cfg = preset_config("tiny", family="hybrid", pattern="M-")
    with pytest.raises(ValueError, match="NemotronH has no gated"):
        MambaConfig(**{**cfg.__dict__, "layers": ["mamba2", "gated_mlp"]})
    assert math.isfinite(cfg.rope_theta)
