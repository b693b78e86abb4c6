"""`mambaweb run` end to end (its own server + headless Chromium), against the numpy reference:
HF folders and MBJS files, --ids and --prompt, --json and --logits-out."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.reference import mamba1_model_numpy as ref

pytestmark = pytest.mark.browser
FIX = REPO / "tests" / "fixtures" / "models"
MAMBAWEB = [sys.executable, "-m", "tools.cli"]


def run_cli(*args):
    p = subprocess.run(MAMBAWEB + ["run", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    return p


def test_run_hf_folder_json_and_logits(tmp_path):
    folder = FIX / "falcon-d40-untied"
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    p = run_cli("--model", str(folder), "--ids", ",".join(map(str, ids)), "--max-new-tokens", "10",
                "--greedy", "--json", "--logits-out", str(tmp_path / "l.npy"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    cfg, params = ref.load_model(folder)
    assert out["ids"] == ref.generate_greedy(params, cfg, np.array(ids), 10)[0].tolist()
    logits = np.load(tmp_path / "l.npy")
    assert logits.shape == (len(ids), cfg.vocab_size) and logits.dtype == np.float32
    expected = ref.forward(params, cfg, np.array(ids))[0]
    assert np.abs(logits - expected).max() <= 1e-4


def test_run_mbjs_file(tmp_path):
    from tools import convert_host
    src = FIX / "mamba-d40-tied"
    convert_host.convert(src, tmp_path / "m.bin", log=lambda *a: None)
    p = run_cli("--model", str(tmp_path / "m.bin"), "--ids", "5,6,7", "--max-new-tokens", "6", "--json")
    assert p.returncode == 0, p.stderr
    cfg, params = ref.load_model(src)
    assert json.loads(p.stdout)["ids"] == ref.generate_greedy(params, cfg, np.array([5, 6, 7]), 6)[0].tolist()


def test_run_prompt_on_default_model_and_bad_model():
    p = run_cli("--prompt", "hi", "--max-new-tokens", "5", "--temperature", "0.8", "--seed", "1", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out["ids"]) == 5 and isinstance(out["text"], str)
    # refused before the browser starts (no server URL in the message), naming what is served
    p = run_cli("--model", "no-such-model", "--ids", "1", "--json")
    assert p.returncode == 2 and "no model named 'no-such-model'" in p.stderr, p.stderr
    assert "served models: default" in p.stderr and "127.0.0.1" not in p.stderr


@pytest.mark.parametrize("name", ["mamba2-g2-untied", "mamba2-g1-tied-ssm-bin"])
def test_run_stepwise_mamba2_against_transformers(tmp_path, name):
    """--stepwise puts the recurrent path's logits in --logits-out; both paths equal
    transformers' (a Mamba-2 folder, and a mamba_ssm pytorch_model.bin read without torch)."""
    folder = FIX / name
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    V = exp["logits"].shape[-1]
    for flag, out in (("--stepwise", "s.npy"), (None, "p.npy")):
        p = run_cli("--model", str(folder), "--ids", ",".join(map(str, ids)), "--max-new-tokens",
                    "16", "--greedy", "--json", "--logits-out", str(tmp_path / out),
                    *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        logits = np.load(tmp_path / out)
        assert np.abs(logits - exp["logits"].reshape(len(ids), V)).max() <= 1e-4, flag
        assert json.loads(p.stdout)["ids"] == exp["greedy_ids"].tolist()


def test_run_with_a_peft_adapter(tmp_path):
    """--adapter applies a PEFT LoRA folder on the loaded model: PEFT's logits, both paths."""
    base = REPO / "tests" / "fixtures" / "train" / "mamba2-g2-untied"
    lora = REPO / "tests" / "fixtures" / "lora" / "mamba2-g2-untied"
    exp = np.load(lora / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    for flag, out in ((None, "p.npy"), ("--stepwise", "s.npy")):
        p = run_cli("--model", str(base), "--ids", ",".join(map(str, ids)), "--max-new-tokens",
                    "2", "--adapter", str(lora / "adapter"), "--json",
                    "--logits-out", str(tmp_path / out), *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["model"]["adapter"]["r"] == 4
        assert np.abs(np.load(tmp_path / out) - exp["logits"]).max() <= 1e-4, flag
    p = run_cli("--model", str(base), "--ids", "1,2", "--adapter", str(tmp_path))
    assert p.returncode == 2 and "adapter_config.json is missing" in p.stderr   # before the boot


def test_generated_mamba3_runs_as_the_reference_says(tmp_path):
    """generate-bin --family mamba3 writes a mamba_ssm-layout model that the engine runs with
    the float64 reference's logits on both paths."""
    from tests.reference import mamba3_numpy as m3
    p = subprocess.run(MAMBAWEB + ["generate-bin", "--family", "mamba3", "--size", "tiny",
                                   "--d-model", "32", "--n-layers", "2", "--vocab-size", "64",
                                   "--seed", "3", "--out", str(tmp_path / "m3")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    model = m3.load_fixture(tmp_path / "m3")
    ids = [5, 9, 1, 33, 2, 7, 60, 11, 4]
    ref = m3.lm_logits(model, np.array(ids))
    for flag, out in ((None, "p.npy"), ("--stepwise", "s.npy")):
        p = run_cli("--model", str(tmp_path / "m3"), "--ids", ",".join(map(str, ids)),
                    "--max-new-tokens", "1", "--logits-out", str(tmp_path / out),
                    *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        got = np.load(tmp_path / out)
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), flag


def test_run_a_fresh_hybrid_schedule_without_a_checkpoint(tmp_path):
    """`run --arch hybrid --pattern M*M- --seed S` (no --model): generate-bin's model for those
    flags, written to a temp folder. --stepwise gives the parallel path's logits (<= 1e-4) over a
    prompt longer than one attention tile, and both equal transformers' NemotronH on the
    generate-bin folder of the same flags."""
    flags = ["--arch", "hybrid", "--pattern", "M*M-", "--size", "tiny", "--d-model", "32",
             "--vocab-size", "64", "--seed", "5"]
    ids = [(7 * i + 3) % 64 for i in range(40)]
    got = {}
    for flag in (None, "--stepwise"):
        out = tmp_path / f"{flag or 'parallel'}.npy"
        p = run_cli(*flags, "--ids", ",".join(map(str, ids)), "--max-new-tokens", "3", "--json",
                    "--logits-out", str(out), *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        assert "fresh random hybrid model" in p.stderr
        report = json.loads(p.stdout)
        assert report["model"]["model_type"] == "nemotron_h" and len(report["ids"]) == 3
        got[flag] = np.load(out)
    assert got[None].shape == (len(ids), 64)
    assert np.abs(got["--stepwise"] - got[None]).max() <= 1e-4
    import torch
    import transformers
    gen = subprocess.run(MAMBAWEB + ["generate-bin", *flags, "--out", str(tmp_path / "g")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "g"),
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ref).max() > 0.1                       # not a trivially small comparison
    assert np.abs(got[None] - ref).max() <= 1e-4


def test_run_an_mbjs_file_with_attention_takes_the_head_count(tmp_path):
    """MBJS does not store an attention layer's head count: `run FILE.bin` without it says how
    to give it, before any browser starts; with --attention-heads it runs the same model as the
    HF folder the file came from (logits and greedy ids); the flag is refused for a folder."""
    from py_engine.models.config import MambaConfig
    from tools import convert_host
    from tools.init_weights import init_weights
    cfg = MambaConfig(model_type="mamba", hidden_size=32, num_hidden_layers=3, vocab_size=64,
                      state_size=8, conv_kernel=4, layers=["mamba1", "attention", "mamba1"],
                      attention_heads=4, attention_kv_heads=4, attention_head_dim=8)
    convert_host.write_hf(str(tmp_path / "hf"), cfg, init_weights(cfg, 11), "F32")
    convert_host.convert(tmp_path / "hf", tmp_path / "h.bin", log=lambda *a: None)
    ids = "3,1,4,1,5,9,2,6"

    p = run_cli("--model", str(tmp_path / "h.bin"), "--ids", ids, "--json")
    assert p.returncode != 0 and "give attention_heads" in p.stderr, p.stderr
    assert "--attention-heads" in p.stderr
    p = run_cli("--model", str(tmp_path / "hf"), "--attention-heads", "4", "--ids", ids)
    assert p.returncode != 0 and "not an MBJS .bin file, so --attention-heads cannot be used" in p.stderr, p.stderr

    got = {}
    for name, extra in (("bin", ["--attention-heads", "4"]), ("hf", [])):
        model = tmp_path / ("h.bin" if name == "bin" else "hf")
        p = run_cli("--model", str(model), *extra, "--ids", ids, "--max-new-tokens", "5",
                    "--json", "--logits-out", str(tmp_path / f"{name}.npy"))
        assert p.returncode == 0, p.stderr
        got[name] = (json.loads(p.stdout)["ids"], np.load(tmp_path / f"{name}.npy"))
    assert got["bin"][0] == got["hf"][0] and len(got["bin"][0]) == 5
    assert np.abs(got["bin"][1]).max() > 0.1
    assert np.array_equal(got["bin"][1], got["hf"][1])
