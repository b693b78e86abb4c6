"""Host-side pieces of the train page: the learning-rate schedule of a run given more steps,
the held-out split, LoRA settings, and the memory estimate whose adapter size must equal what
PEFT builds for the same model, rank and targets."""
import json

import pytest

from py_engine.app import finetune as FT
from py_engine.app import finetune_session as FS
from py_engine.models.config import MambaConfig
from py_engine.train import session as S
from tests.conftest import REPO

BASE = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"


def test_more_steps_keep_the_schedule_and_train_at_its_final_rate():
    t = S.train_config({"steps": 20, "warmup": 2, "lr": 0.5})
    before = [S._lr_at(s, t) for s in range(20)]
    t["schedule_steps"] = 20                  # what more_steps records before raising steps
    t["steps"] = 30
    t = S.train_config(t)                     # and a resume (train_config) keeps it
    assert t["schedule_steps"] == 20
    after = [S._lr_at(s, t) for s in range(30)]
    assert after[:20] == before               # the first 20 steps are the same run
    assert after[20:] == [pytest.approx(0.5 * t["min_lr_ratio"])] * 10   # then the final rate


def test_heldout_split_is_the_tail():
    ids = list(range(1000))
    train, rows = FT.split_heldout(ids, 32, 0.1)
    assert train == ids[:900] and len(rows) == 3
    assert rows[0][0] == ids[900:932] and rows[0][1] == rows[0][0]
    with pytest.raises(ValueError, match="give at least 66"):
        FT.split_heldout(list(range(40)), 32)
    assert FS._spread(list(range(100)), 4) == [0, 25, 50, 75]


def test_lora_settings_are_checked():
    assert FS.lora_settings({"r": "4", "alpha": "8", "rslora": 1})["r"] == 4
    with pytest.raises(ValueError, match="rank r must be at least 1"):
        FS.lora_settings({"r": 0})
    with pytest.raises(ValueError, match="must be a whole number"):
        FS.lora_settings({"r": "x"})


def test_estimate_counts_the_adapter_peft_builds():
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    cfg = MambaConfig.from_hf_dict(json.loads((BASE / "config.json").read_text()))
    t = S.train_config({"batch": 2, "seq_len": 32})
    lora = FS.lora_settings({"r": 4})
    est = FS.estimate(cfg, t, lora)
    base = transformers.AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    total = sum(p.numel() for p in base.parameters())
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=lora["targets"]))
    adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert est["trained"]["lora"] == adapter and est["params"] == total
    mem = est["memory_bytes"]
    assert mem["lora"] < mem["full"] and mem["wsla"] < mem["full"]
    # LoRA saves the gradients and both AdamW moments of every base weight, less its own
    assert mem["full"] - mem["lora"] == 4 * (3 * total - 4 * adapter)


@pytest.mark.parametrize("family", ["mamba1", "mamba2"])
def test_estimate_counts_the_rows_wsla_trains(family):
    """WSLA trains B/C rows (Mamba-1: x_proj's B and C pieces; Mamba-2: rows of in_proj's
    x|B|C block): the page's estimate counts exactly those numbers."""
    from py_engine.train.init import preset_config
    cfg = preset_config("tiny", family=family)
    e = FS.estimate(cfg, S.train_config({}), FS.lora_settings(None))
    L, N = cfg.num_hidden_layers, cfg.state_size
    per_layer = (2 * N * cfg.intermediate_size if family == "mamba1"
                 else 2 * cfg.n_groups * N * cfg.hidden_size)
    assert e["trained"]["wsla"] == L * per_layer > 0
    assert e["memory_bytes"]["wsla"] < e["memory_bytes"]["full"]
