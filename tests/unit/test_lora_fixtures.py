"""The LoRA fixtures (tools/make_lora_fixtures.py) re-checked on the host with transformers + PEFT: the adapter
folders say what we expect (config, tensor names / shapes, nonzero A and B), PeftModel reloaded from them
reproduces the stored logits / base logits, the training loss, every adapter gradient and 5 AdamW steps, the
merged weights equal W + (alpha/r) B @ A computed from the files, and the default-init Mamba-2 adapter (stock
PEFT, B = 0) loads without any patch and leaves the logits at the base's. Stored values within 1e-5
(relative to max(1, max |ref|))."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tests.unit._fixture_checks import FIX, TOL, TRAIN, rel  # noqa: E402
from tools.make_lora_fixtures import allow_out_proj  # noqa: E402

LORA = FIX / "lora"
MAMBA_TARGETS = ["in_proj", "out_proj"]
NEMOTRON_TARGETS = ["down_proj", "in_proj", "k_proj", "o_proj", "out_proj", "q_proj", "up_proj", "v_proj"]
BASES = {"mamba-d24-untied": MAMBA_TARGETS, "mamba2-g2-untied": MAMBA_TARGETS,
         "nemotronh-mamf-untied": NEMOTRON_TARGETS}
N_MODULES = {"mamba-d24-untied": 4, "mamba2-g2-untied": 4, "nemotronh-mamf-untied": 10}
R, ALPHA = 4, 8


def _info(base):
    return json.loads((LORA / base / "fixture.json").read_text())


def _base(base):
    return transformers.AutoModelForCausalLM.from_pretrained(TRAIN / base, dtype=torch.float32).eval()


def _peft(base, folder="adapter", trainable=False):
    with allow_out_proj():
        return PeftModel.from_pretrained(_base(base), LORA / base / folder, is_trainable=trainable)


def _logits(model, prompt):
    with torch.no_grad():
        return model(torch.from_numpy(prompt)[None], use_cache=False).logits[0].numpy()


def test_folders_present_and_small():
    for base in BASES:
        d = LORA / base
        for f in ("expected.npz", "fixture.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
            assert (d / f).is_file(), d / f
        for f in d.rglob("*"):
            assert f.is_dir() or f.stat().st_size < 300 * 1024, f
    assert (LORA / "mamba2-g2-untied" / "adapter_default" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("base", BASES)
def test_adapter_config_and_tensors(base):
    cfg = json.loads((LORA / base / "adapter" / "adapter_config.json").read_text())
    want = dict(peft_type="LORA", task_type="CAUSAL_LM", r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                target_modules=BASES[base], base_model_name_or_path=f"tests/fixtures/train/{base}",
                use_dora=False, use_rslora=False, fan_in_fan_out=False, modules_to_save=None)
    assert {k: cfg[k] for k in want} == want
    info = _info(base)
    assert info["scaling"] == ALPHA / R and info["base"] == f"train/{base}"
    mods = info["lora_modules"]
    assert len(mods) == N_MODULES[base]
    sd = load_file(LORA / base / "adapter" / "adapter_model.safetensors")
    base_sd = load_file(TRAIN / base / "model.safetensors")
    # saved names drop the adapter name: <prefix>.lora_A.weight / .lora_B.weight, nothing else
    assert set(sd) == {f"{p}.lora_{ab}.weight" for p in mods for ab in "AB"}
    assert not any(".default." in k for k in sd)
    for prefix, hf in mods.items():
        # PEFT module path and checkpoint name agree after their first component (NemotronH: model. vs backbone.)
        assert prefix.startswith("base_model.model.") and prefix.split(".", 3)[3] + ".weight" == hf.split(".", 1)[1]
        assert prefix.split(".")[-1] in BASES[base]
        out_f, in_f = base_sd[hf].shape
        A, B = sd[prefix + ".lora_A.weight"], sd[prefix + ".lora_B.weight"]
        assert A.dtype == B.dtype == torch.float32
        assert A.shape == (R, in_f) and B.shape == (out_f, R)
        assert (A != 0).all() and (B != 0).all(), prefix      # both seeded random, not PEFT's B = 0


@pytest.mark.parametrize("base", BASES)
def test_stock_peft_refuses_out_proj_on_mamba_types(base):
    """Why the generator and the loads here disable PEFT's check (see tools/make_lora_fixtures.py)."""
    with pytest.raises(ValueError, match="incompatible with Mamba-based models"):
        PeftModel.from_pretrained(_base(base), LORA / base / "adapter")


@pytest.mark.parametrize("base", BASES)
def test_logits_with_and_without_adapter(base):
    exp = np.load(LORA / base / "expected.npz")
    prompt = exp["prompt_ids"]
    pm = _peft(base).eval()
    V = pm.config.vocab_size
    assert prompt.dtype == np.int64 and exp["logits"].shape == exp["base_logits"].shape == (len(prompt), V)
    assert rel(_logits(pm, prompt), exp["logits"]) <= TOL
    with pm.disable_adapter():
        assert rel(_logits(pm, prompt), exp["base_logits"]) <= TOL
    assert rel(_logits(_base(base), prompt), exp["base_logits"]) <= TOL
    effect = np.abs(exp["logits"] - exp["base_logits"]).max()
    assert 1e-2 <= effect <= 0.25 * np.ptp(exp["base_logits"])          # visible but sane


@pytest.mark.parametrize("base", BASES)
def test_loss_grads_and_adamw_over_adapter_only(base):
    exp = np.load(LORA / base / "expected.npz")
    train = np.load(TRAIN / base / "expected.npz")
    ids, labels = torch.from_numpy(train["input_ids"]), torch.from_numpy(train["labels"])
    pm = _peft(base, trainable=True)
    params = {k.replace(".default.", "."): p for k, p in pm.named_parameters() if p.requires_grad}
    assert set(params) == set(load_file(LORA / base / "adapter" / "adapter_model.safetensors"))
    assert all(p.dim() == 2 for p in params.values())                   # so all of them are decayed
    pm.train()
    loss = pm(input_ids=ids, labels=labels, use_cache=False).loss
    loss.backward()
    assert abs(loss.item() - float(exp["loss"])) <= TOL
    assert abs(float(exp["loss"]) - float(train["loss"])) > 1e-4        # the adapter is in the loss
    assert {k[5:] for k in exp.files if k.startswith("grad.")} == set(params)
    assert {k[6:] for k in exp.files if k.startswith("adamw.")} == set(params)
    for k, p in params.items():
        ref = exp["grad." + k]
        assert np.abs(ref).max() > 0, k                                  # A's gradient too (B != 0)
        assert rel(p.grad.numpy(), ref) <= TOL, k
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            foreach=False)
    frozen = {k: p.detach().clone() for k, p in pm.named_parameters() if not p.requires_grad}
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = pm(input_ids=ids, labels=labels, use_cache=False).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(losses, exp["adamw_losses"], rtol=TOL)
    for k, p in params.items():
        assert rel(p.detach().numpy(), exp["adamw." + k]) <= TOL, k
    assert all(torch.equal(p, frozen[k]) for k, p in pm.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("base", BASES)
def test_merged_weights_are_w_plus_scaled_ba(base):
    exp = np.load(LORA / base / "expected.npz")
    mods = _info(base)["lora_modules"]
    sd = load_file(LORA / base / "adapter" / "adapter_model.safetensors")
    base_sd = load_file(TRAIN / base / "model.safetensors")
    assert {k[7:] for k in exp.files if k.startswith("merged.")} == set(mods.values())
    for prefix, hf in mods.items():
        A = sd[prefix + ".lora_A.weight"].double().numpy()
        B = sd[prefix + ".lora_B.weight"].double().numpy()
        want = base_sd[hf].double().numpy() + (ALPHA / R) * B @ A
        assert rel(exp["merged." + hf], want) <= TOL, hf
        assert np.abs(exp["merged." + hf] - base_sd[hf].numpy()).max() > 1e-4, hf
    # PEFT's own merge_and_unload gives the same tensors, and the merged model the adapter's logits
    merged = _peft(base).merge_and_unload().eval()
    mem = dict(merged.named_parameters())
    for prefix, hf in mods.items():
        assert rel(mem[prefix[len("base_model.model."):] + ".weight"].detach().numpy(), exp["merged." + hf]) <= TOL
    assert rel(_logits(merged, exp["prompt_ids"]), exp["logits"]) <= 1e-4


def test_default_init_adapter_loads_with_stock_peft_and_is_a_noop():
    base = "mamba2-g2-untied"
    folder = LORA / base / "adapter_default"
    cfg = json.loads((folder / "adapter_config.json").read_text())
    got_cfg = (cfg["r"], cfg["lora_alpha"], cfg["target_modules"], cfg["init_lora_weights"])
    assert got_cfg == (R, ALPHA, ["in_proj"], True)
    sd = load_file(folder / "adapter_model.safetensors")
    assert sorted(sd) == [f"base_model.model.backbone.layers.{i}.mixer.in_proj.lora_{ab}.weight"
                          for i in range(2) for ab in "AB"]
    for k, v in sd.items():
        assert (v == 0).all() if ".lora_B." in k else (v != 0).all(), k
    exp = np.load(LORA / base / "expected.npz")
    pm = PeftModel.from_pretrained(_base(base), folder).eval()           # no allow_out_proj(): stock PEFT
    assert len([m for m in pm.modules() if isinstance(m, peft.tuners.lora.Linear)]) == 2
    got = _logits(pm, exp["prompt_ids"])
    assert np.array_equal(got, _logits(_base(base), exp["prompt_ids"]))
    assert rel(got, exp["base_logits"]) <= TOL
