"""Hybrid patterns with the gated SwiGLU MLP (`+`) in generate-bin / pretrain: the letters, which
checkpoint layout each pattern is saved in, and what generate-bin writes (host only; the
engine loading those files back exactly: tests/unit/test_gated_hybrid_native.py)."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from py_engine.train.init import hybrid_layout, preset_config
from tools.cli import main as cli

# state-spaces/mamba mamba_ssm/models/config_mamba.py: MambaConfig's fields. from_pretrained
# builds MambaConfig(**config.json), so a key outside these makes the file unloadable there.
MAMBA_SSM_CONFIG_FIELDS = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg",
                           "attn_layer_idx", "attn_cfg", "rms_norm", "residual_in_fp32",
                           "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"}


@pytest.mark.parametrize("pattern, model_type, layout", [
    ("MM*M-", "nemotron_h", "hf"),          # no +: NemotronH as before
    ("M+*+M+", "mamba2", "mamba_ssm"),       # a gated MLP after every mixer: mamba_ssm Blocks
    ("*+", "mamba2", "mamba_ssm"),
    ("MM*+", "mamba2", "hf"),                # a + elsewhere: our HF-style names
    ("M+M", "mamba2", "hf"),
    ("M+-+", "mamba2", "hf"),                # relu^2 MLP has no mamba_ssm form
    ("++", "mamba2", "hf"),
])
def test_pattern_picks_the_layout(pattern, model_type, layout):
    assert hybrid_layout(pattern) == (model_type, layout)
    cfg = preset_config("tiny", family="hybrid", pattern=pattern, hidden_size=32, vocab_size=64)
    assert (cfg.model_type, cfg.checkpoint_layout) == (model_type, layout)
    letters = {"M": "mamba2", "*": "attention", "-": "mlp", "+": "gated_mlp"}
    assert cfg.layers == [letters[c] for c in pattern]


def test_gated_mlp_size_follows_mamba_ssm_and_bad_letters_are_named():
    cfg = preset_config("tiny", family="hybrid", pattern="M+", hidden_size=40, vocab_size=64)
    assert cfg.mlp_intermediate_size == 256     # 4 * 40 = 160 rounded up to GatedMLP's 128
    with pytest.raises(ValueError, match=r"unknown layer letters \['g'\].*\+ \(gated SwiGLU MLP\)"):
        preset_config("tiny", family="hybrid", pattern="Mg")


def test_generate_bin_writes_a_mamba_ssm_hybrid(tmp_path, capsys):
    out = tmp_path / "m"
    assert cli(["generate-bin", "--family", "hybrid", "--pattern", "M+*+", "--size", "tiny",
                "--d-model", "32", "--vocab-size", "64", "--untied", "--out", str(out)]) == 0
    assert "saved as a mamba_ssm MambaLMHeadModel" in capsys.readouterr().out
    conf = json.loads((out / "config.json").read_text())
    assert set(conf) <= MAMBA_SSM_CONFIG_FIELDS, set(conf) - MAMBA_SSM_CONFIG_FIELDS
    assert conf["n_layer"] == 2 and conf["attn_layer_idx"] == [1]
    assert conf["d_intermediate"] == 128 and conf["ssm_cfg"]["layer"] == "Mamba2"
    assert conf["tie_embeddings"] is False and conf["attn_cfg"]["causal"] is True
    w = load_file(out / "model.safetensors")
    D, F = 32, 128
    assert w["backbone.layers.0.mlp.fc1.weight"].shape == (2 * F, D)
    assert w["backbone.layers.1.mlp.fc2.weight"].shape == (D, F)
    assert w["backbone.layers.1.norm2.weight"].shape == (D,)
    H, KVH, Dh = 2, 1, 16
    assert w["backbone.layers.1.mixer.in_proj.weight"].shape == ((H + 2 * KVH) * Dh, D)
    assert "backbone.embedding.weight" in w and "lm_head.weight" in w
    assert not any(".mixer.fc1" in k or "q_proj" in k for k in w)
    # the same initialiser as every other family: fc2 / sqrt(n schedule layers)
    bound = 1 / np.sqrt(F) / np.sqrt(4)
    assert 0.8 * bound < np.abs(w["backbone.layers.0.mlp.fc2.weight"]).max() <= bound


def test_generate_bin_writes_our_names_for_other_gated_patterns(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli(["generate-bin", "--family", "hybrid", "--pattern", "MM*+", "--size", "tiny",
                "--d-model", "32", "--vocab-size", "64", "--out", str(out)]) == 0
    assert "saved with our HF-style names" in capsys.readouterr().out
    conf = json.loads((out / "config.json").read_text())
    assert conf["model_type"] == "mamba2"
    assert conf["layers"] == ["mamba2", "mamba2", "attention", "gated_mlp"]
    assert (conf["attention_heads"], conf["attention_kv_heads"], conf["attention_head_dim"],
            conf["mlp_intermediate_size"], conf["mlp_bias"]) == (2, 1, 16, 128, False)
    w = load_file(out / "model.safetensors")
    assert w["backbone.layers.3.mixer.fc1.weight"].shape == (256, 32)
    assert w["backbone.layers.2.mixer.q_proj.weight"].shape == (32, 32)
    from py_engine.models.config import MambaConfig
    back = MambaConfig.from_hf_dict(conf)
    assert back.layers == conf["layers"] and back.mlp_intermediate_size == 128
