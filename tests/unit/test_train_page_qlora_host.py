"""Host-side pieces of the train page's QLoRA and target choice (issue 14): the linear layers
offered as LoRA targets are the nn.Linear modules transformers builds for the same config; the
memory estimate counts the base in its GPU format and the adapter of the ticked targets (equal
to PEFT's for those targets); modes that train base weights refuse a narrow base in one
sentence, as `mambaweb finetune --weights` does."""
import json

import pytest

from py_engine.app import finetune_session as FS
from py_engine.models.config import MambaConfig
from py_engine.train import session as S
from py_engine.train.init import param_count
from py_engine.train.lora import DEFAULT_TARGETS, linear_modules
from tests.conftest import REPO

MODELS = REPO / "tests" / "fixtures" / "models"


def _cfg(name):
    return MambaConfig.from_hf_dict(json.loads((MODELS / name / "config.json").read_text()))


def _torch_model(name):
    import torch
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(MODELS / name, dtype=torch.float32)


@pytest.mark.parametrize("name", ["bytes-tiny-stdlib", "mamba2-g2-untied", "nemotronh-mamf-untied"])
def test_targets_offered_are_the_linear_layers_transformers_builds(name):
    import torch
    model = _torch_model(name)
    want = {}
    for path, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in path:
            stem = path.rsplit(".", 1)[1]
            want[stem] = want.get(stem, 0) + 1
    offered = linear_modules(_cfg(name))
    assert {n: k for n, k, _ in offered} == want
    # ticked at first: the modules DEFAULT_TARGETS adapts (out_proj, x_proj, dt_proj are not)
    assert {n for n, _, d in offered if d} == set(want) & set(DEFAULT_TARGETS)


def test_estimate_counts_the_ticked_targets_and_the_narrow_base():
    from peft import LoraConfig, get_peft_model
    name = "bytes-tiny-stdlib"              # Mamba-1: in_proj, x_proj, dt_proj, out_proj
    cfg = _cfg(name)
    t = S.train_config({"batch": 2, "seq_len": 32})
    targets = ["in_proj", "x_proj"]
    lora = FS.lora_settings({"r": 4, "targets": targets})
    f32, q4 = FS.estimate(cfg, t, lora, "f32"), FS.estimate(cfg, t, lora, "q4")
    peft_model = get_peft_model(_torch_model(name), LoraConfig(r=4, lora_alpha=8,
                                                               target_modules=targets))
    adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert f32["trained"]["lora"] == q4["trained"]["lora"] == adapter
    default = FS.estimate(cfg, t, FS.lora_settings({"r": 4}), "f32")["trained"]["lora"]
    assert default < adapter                 # x_proj adds modules to the in_proj default

    P = param_count(cfg)
    assert FS.base_bytes(cfg, "f32") == (4 * P, 0)
    base, temp = FS.base_bytes(cfg, "q4")
    # q4 holds half a byte per value + an f16 scale per 32 values for the embedding, in_proj,
    # x_proj and out_proj (dt_proj, norms, conv, A, D stay f32): the f32 bytes of those
    # matrices shrink by 8 / (0.5 + 2/32) = 14.2x
    D, I, R, N, V, L = 64, 128, 4, 16, 256, 2
    narrow = V * D + L * (2 * I * D + (R + 2 * N) * I + D * I)
    assert base == 4 * (P - narrow) + narrow // 2 + 2 * (narrow // 32)
    assert temp == 4 * V * D                 # the largest piece dequantized at once: the embedding
    mem = q4["memory_bytes"]["lora"]
    assert mem == f32["memory_bytes"]["lora"] - (4 * P - base) + temp
    assert q4["memory_bytes"]["full"] == f32["memory_bytes"]["full"]   # full needs f32 anyway
    assert q4["base_bytes"] == base and q4["weights"] == "q4"


def test_modes_that_train_base_weights_refuse_a_narrow_base():
    for fmt in ("f32", "f16", "bf16", "q8", "q4"):
        assert FS.check_weights("lora", fmt) == fmt
    assert FS.check_weights("full", "f32") == "f32"
    with pytest.raises(ValueError) as e:
        FS.check_weights("full", "q4")
    assert str(e.value) == ("a q4 base stays frozen and narrow, and a full fine-tune trains "
                            "every weight: choose LoRA (QLoRA on q4) or f32 weights")
    with pytest.raises(ValueError, match="WSLA trains the base's B/C rows: choose LoRA"):
        FS.check_weights("wsla", "bf16")
    with pytest.raises(ValueError, match="unknown weight format 'q3': choose one of"):
        FS.check_weights("lora", "q3")
    sess = FS.FinetuneSession(device=None)
    with pytest.raises(ValueError, match="a q8 base stays frozen"):
        sess._configure({"mode": "full", "weights": "q8"})


def test_no_target_ticked_is_one_sentence():
    with pytest.raises(ValueError, match="^LoRA needs at least one target module: tick one"):
        FS.lora_settings({"targets": []})
    assert FS.lora_settings(None)["targets"] == list(DEFAULT_TARGETS)
