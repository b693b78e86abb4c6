"""MambaConfig <-> HF config.json, checked against transformers' own config classes."""
import pytest

from py_engine.models.config import MambaConfig


def test_defaults_match_transformers():
    transformers = pytest.importorskip("transformers")
    hf = transformers.MambaConfig(vocab_size=100, hidden_size=40, num_hidden_layers=3)
    ours = MambaConfig.from_hf_dict(hf.to_dict())
    assert ours.intermediate_size == hf.intermediate_size == 80
    assert ours.time_step_rank == hf.time_step_rank == 3        # ceil(40 / 16)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "conv_kernel",
                "expand", "use_bias", "use_conv_bias", "layer_norm_epsilon",
                "tie_word_embeddings", "residual_in_fp32", "time_step_min", "time_step_max",
                "time_step_floor", "time_step_init_scheme", "time_step_scale"):
        assert getattr(ours, key) == getattr(hf, key), key
    assert ours.layers == ["mamba1"] * 3
    assert ours.architecture == "MambaForCausalLM"


def test_falcon_mamba_round_trip_through_transformers():
    transformers = pytest.importorskip("transformers")
    hf = transformers.FalconMambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                        mixer_rms_eps=3e-6)
    ours = MambaConfig.from_hf_dict(hf.to_dict())
    assert ours.is_falcon and ours.mixer_rms_eps == 3e-6
    again = transformers.FalconMambaConfig(**{k: v for k, v in ours.to_hf_dict().items()
                                              if k != "architectures"})
    assert again.mixer_rms_eps == 3e-6 and again.intermediate_size == 64
    assert ours.to_hf_dict()["architectures"] == ["FalconMambaForCausalLM"]


def test_round_trip_keeps_unmodelled_keys():
    d = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], "hidden_size": 64,
         "num_hidden_layers": 2, "vocab_size": 256, "time_step_rank": "auto",
         "eos_token_id": 7, "fused_add_norm": True, "intermediate_size": 999}
    cfg = MambaConfig.from_hf_dict(d)
    out = cfg.to_hf_dict()
    assert out["eos_token_id"] == 7 and out["fused_add_norm"] is True
    # transformers derives intermediate_size from expand * hidden_size and ignores the key
    assert cfg.intermediate_size == 128 and out["intermediate_size"] == 128
    assert out["time_step_rank"] == 4
    assert MambaConfig.from_hf_dict(out) == cfg


@pytest.mark.parametrize("d, msg", [
    ({"model_type": "jamba"}, "config.json: model_type 'jamba' is not supported; supported"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({}, "model_type None is not supported"),
    ({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba4"}},
     "ssm_cfg.layer 'Mamba4' is not supported"),
    ({"d_model": 768, "n_layer": 24, "vocab_size": 50277,
      "ssm_cfg": {"layer": "Mamba3", "is_mimo": True, "mimo_rank": 9}}, "mimo_rank 9 is outside 1..8"),
    ({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "attn_layer_idx": [3]},
     "attn_cfg.num_heads is missing (MHA needs it)"),   # hybrids: test_mamba_ssm_hybrid.py
    ({"model_type": "mamba2", "hidden_size": 64, "num_heads": 3, "head_dim": 40},
     "num_heads * head_dim = 3 * 40 = 120 must equal expand * hidden_size = 128"),
    ({"model_type": "mamba2", "hidden_size": 64, "num_heads": 8, "head_dim": 16, "n_groups": 3},
     "num_heads 8 is not a multiple of n_groups 3"),
    ({"model_type": "mamba", "num_hidden_layers": 2, "layers": ["mamba1", "mamba2"]},
     "mamba2 layers need model_type 'mamba2'"),
    ({"model_type": "mamba", "architectures": ["Mamba2ForCausalLM"]},
     "architectures lists 'Mamba2ForCausalLM', which is not supported"),
    ({"model_type": "mamba", "hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"model_type": "mamba", "hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"model_type": "mamba", "num_hidden_layers": 2, "layers": ["mamba1", "rwkv"]},
     "layer 1 type 'rwkv' is unknown"),
    ({"model_type": "mamba", "num_hidden_layers": 2, "layers": ["mamba1"]},
     "layer schedule has 1 entries but num_hidden_layers is 2"),
])
def test_rejects_with_the_file_and_what_is_supported(d, msg):
    with pytest.raises(ValueError) as e:
        MambaConfig.from_hf_dict(d, "config.json")
    assert msg in str(e.value)
    assert str(e.value).startswith("config.json")


def test_schedule_other_than_mamba1_is_written():
    cfg = MambaConfig(hidden_size=32, num_hidden_layers=2, layers=["mamba1", "attention"],
                      attention_heads=2, attention_kv_heads=1, attention_head_dim=16)
    assert cfg.to_hf_dict()["layers"] == ["mamba1", "attention"]
    assert "layers" not in MambaConfig(hidden_size=32, num_hidden_layers=2).to_hf_dict()


def test_mamba2_defaults_and_round_trip_match_transformers():
    transformers = pytest.importorskip("transformers")
    hf = transformers.Mamba2Config(vocab_size=96, hidden_size=48, num_hidden_layers=3,
                                   num_heads=8, head_dim=12, n_groups=2, state_size=16,
                                   chunk_size=8)
    ours = MambaConfig.from_hf_dict(hf.to_dict())
    assert ours.layers == ["mamba2"] * 3 and ours.architecture == "Mamba2ForCausalLM"
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "conv_kernel",
                "expand", "use_bias", "use_conv_bias", "layer_norm_epsilon", "num_heads",
                "head_dim", "n_groups", "chunk_size", "tie_word_embeddings", "time_step_min",
                "time_step_max", "time_step_floor"):
        assert getattr(ours, key) == getattr(hf, key), key
    assert ours.time_step_limit == tuple(hf.time_step_limit)
    again = transformers.Mamba2Config(**{k: v for k, v in ours.to_hf_dict(json_safe=False).items()
                                         if k != "architectures"})
    assert (again.num_heads, again.head_dim, again.n_groups, again.chunk_size) == (8, 12, 2, 8)
    assert MambaConfig.from_hf_dict(ours.to_hf_dict()) == ours
    # A config.json that leaves keys out means transformers' Mamba2Config defaults.
    bare = MambaConfig.from_hf_dict({"model_type": "mamba2"})
    ref = transformers.Mamba2Config()
    assert (bare.hidden_size, bare.num_heads, bare.head_dim, bare.n_groups, bare.state_size,
            bare.tie_word_embeddings) == (ref.hidden_size, ref.num_heads, ref.head_dim,
                                          ref.n_groups, ref.state_size, ref.tie_word_embeddings)


def test_mamba_ssm_configs_map_to_the_schedule():
    m2 = MambaConfig.from_hf_dict({
        "d_model": 768, "n_layer": 24, "d_intermediate": 0, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
        "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 16,
        "tie_embeddings": True})
    assert m2.model_type == "mamba2" and m2.layers == ["mamba2"] * 24
    assert (m2.state_size, m2.head_dim, m2.num_heads, m2.n_groups, m2.chunk_size) == \
        (128, 64, 24, 1, 256)                      # mamba_ssm's Mamba2 defaults
    assert m2.vocab_size == 50288 and m2.tie_word_embeddings   # padded to a multiple of 16
    m1 = MambaConfig.from_hf_dict({"d_model": 64, "n_layer": 2, "vocab_size": 100,
                                   "ssm_cfg": {"d_state": 8}})
    assert m1.model_type == "mamba" and m1.state_size == 8 and m1.vocab_size == 104


def test_nemotron_h_schedule_and_round_trip_match_transformers():
    transformers = pytest.importorskip("transformers")
    hf = transformers.NemotronHConfig(
        vocab_size=96, hidden_size=32, layers_block_type=["mamba", "attention", "mlp", "mamba"],
        mamba_num_heads=4, mamba_head_dim=12, n_groups=2, ssm_state_size=8, chunk_size=16,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64)
    ours = MambaConfig.from_hf_dict(hf.to_dict())
    assert ours.layers == ["mamba2", "attention", "mlp", "mamba2"]
    assert (ours.num_heads, ours.head_dim, ours.n_groups, ours.state_size) == (4, 12, 2, 8)
    assert (ours.attention_heads, ours.attention_kv_heads, ours.attention_head_dim) == (4, 2, 8)
    assert ours.mlp_intermediate_size == 64 and ours.architecture == "NemotronHForCausalLM"
    back = ours.to_hf_dict(json_safe=False)
    again = transformers.NemotronHConfig(**{k: v for k, v in back.items() if k != "architectures"})
    for key in ("layers_block_type", "mamba_num_heads", "mamba_head_dim", "n_groups",
                "ssm_state_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size", "chunk_size", "tie_word_embeddings"):
        assert getattr(again, key) == getattr(hf, key), key
    assert MambaConfig.from_hf_dict(ours.to_hf_dict()) == ours
    # the older pattern string, and refusals by name
    p = MambaConfig.from_hf_dict({"model_type": "nemotron_h", "hidden_size": 32,
                                  "hybrid_override_pattern": "M*-M", "mamba_num_heads": 4,
                                  "mamba_head_dim": 16, "n_groups": 2, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "head_dim": 8})
    assert p.layers == ["mamba2", "attention", "mlp", "mamba2"]
    with pytest.raises(ValueError, match="layer 1 is a mixture-of-experts block"):
        MambaConfig.from_hf_dict({"model_type": "nemotron_h", "layers_block_type": ["mamba", "moe"]})
