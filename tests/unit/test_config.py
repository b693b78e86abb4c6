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
    ({"model_type": "mamba2"}, "config.json: model_type 'mamba2' is not supported; supported"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({}, "model_type None is not supported"),
    ({"d_model": 768, "n_layer": 24, "vocab_size": 50277}, "state-spaces/mamba (mamba_ssm)"),
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
    cfg = MambaConfig(hidden_size=32, num_hidden_layers=2, layers=["mamba1", "attention"])
    assert cfg.to_hf_dict()["layers"] == ["mamba1", "attention"]
    assert "layers" not in MambaConfig(hidden_size=32, num_hidden_layers=2).to_hf_dict()
