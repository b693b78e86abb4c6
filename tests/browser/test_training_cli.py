"""The training commands end to end (each starts its own server + headless Chromium):
`mambaweb train-check` against the PyTorch fixture, and `mambaweb pretrain` writing an HF
folder + training state, then continuing from it with --resume."""
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import REPO

pytestmark = pytest.mark.browser
TRAIN = REPO / "tests" / "fixtures" / "train"


def mambaweb(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tools.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["mamba-d24-untied", "mamba2-g2-untied"])
def test_train_check_matches_pytorch_fixture(tmp_path, name):
    exp = np.load(TRAIN / name / "expected.npz")
    np.save(tmp_path / "ids.npy", exp["input_ids"].astype(np.int64))
    np.save(tmp_path / "labels.npy", exp["labels"].astype(np.int64))
    out = tmp_path / "out"
    r = mambaweb("train-check", "--model", TRAIN / name, "--ids", tmp_path / "ids.npy",
                 "--labels", tmp_path / "labels.npy", "--out", out, "--steps", 5,
                 "--lr", "1e-2", "--betas", "0.9,0.95", "--eps", "1e-8", "--weight-decay", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert [l["step"] for l in lines] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([l["loss"] for l in lines], exp["adamw_losses"], rtol=1e-4)
    grads = load_file(out / "grads.safetensors")
    ref = {k[len("grad."):]: exp[k] for k in exp.files if k.startswith("grad.")}
    assert set(grads) == set(ref)          # HF names, split pieces rejoined
    for k, g in ref.items():
        assert grads[k].shape == g.shape, k
        scale = max(np.abs(g).max(), 1e-12)
        assert np.abs(grads[k] - g).max() <= 1e-4 * scale, k
    params = load_file(out / "params.safetensors")
    for k in (k for k in exp.files if k.startswith("adamw.")):
        err = np.abs(params[k[len("adamw."):]] - exp[k])
        assert err.max() <= 0.01 * 5 * 1e-2 and np.median(err) <= 1e-6, k


def test_train_check_user_errors(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3, 500]], np.int64))
    r = mambaweb("train-check", "--model", TRAIN / "mamba-d24-untied", "--ids",
                 tmp_path / "ids.npy", "--out", tmp_path / "o")
    assert r.returncode == 2 and "token ids must lie in [0, 77)" in r.stderr
    r = mambaweb("train-check", "--model", tmp_path, "--ids", tmp_path / "ids.npy",
                 "--out", tmp_path / "o")
    assert r.returncode == 2 and "no config.json" in r.stderr


def test_pretrain_cli_writes_a_loadable_folder_and_resumes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the cat sat on the mat. " * 60)
    (corpus / "b.py").write_text("def add(a, b):\n    return a + b\n" * 40)
    (corpus / "img.bin").write_bytes(b"\0\1\2" * 100)            # skipped: binary
    out = tmp_path / "run"
    common = ["--corpus", corpus, "--size", "tiny", "--d-model", 32, "--batch", 2,
              "--seq-len", 32, "--lr", "5e-3", "--out", out]
    r = mambaweb("pretrain", *common, "--steps", 3)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert [x["step"] for x in recs] == [1, 2, 3]
    assert all(x["loss"] > 0 and x["tokens_per_s"] > 0 for x in recs)
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "training_state.safetensors"} <= {p.name for p in out.iterdir()}
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.hidden_size == 32 and model.config.vocab_size == 256
    first = load_file(out / "model.safetensors")
    # continue from the saved state to step 5 (steps 4, 5 only)
    r = mambaweb("pretrain", *common, "--steps", 5, "--resume", out)
    assert r.returncode == 0, r.stderr[-3000:]
    more = [json.loads(l) for l in r.stdout.splitlines()]
    assert [x["step"] for x in more] == [4, 5]
    assert "starting at step 3 of 5" in r.stderr
    second = load_file(out / "model.safetensors")
    assert any(not np.array_equal(first[k], second[k]) for k in first)
    # plain errors
    r = mambaweb("pretrain", "--corpus", tmp_path / "nope", "--out", out, "--steps", 1)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_pretrain_cli_trains_a_mamba2_that_transformers_loads(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 80)
    out = tmp_path / "m2"
    r = mambaweb("pretrain", "--corpus", corpus, "--family", "mamba2", "--size", "tiny",
                 "--d-model", 32, "--n-layers", 2, "--batch", 2, "--seq-len", 40, "--lr", "1e-2",
                 "--steps", 6, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(l)["loss"] for l in r.stdout.splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0]
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(model).__name__ == "Mamba2ForCausalLM" and model.config.hidden_size == 32
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    # WSLA trains Mamba-2's and Mamba-3's B/C rows (tests/browser/test_finetune_modes.py,
    # tests/unit/test_mamba3_lora_native.py); a bidirectional model's is refused by name
    r = mambaweb("pretrain", "--corpus", corpus, "--family", "mamba3", "--size", "tiny",
                 "--bidi", "mean", "--wsla", "--steps", 1, "--out", tmp_path / "w")
    assert r.returncode == 2 and "WSLA is not defined for bidirectional layers" in r.stderr


def test_pretrain_cli_trains_a_seeds_style_hybrid(tmp_path):
    """Every 4th layer attention, Mamba-2 elsewhere (the seeds' schedule), plus an MLP layer:
    trains in the tab with a falling loss and exports a NemotronH that transformers runs."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 80)
    out = tmp_path / "h"
    r = mambaweb("pretrain", "--corpus", corpus, "--family", "hybrid", "--pattern", "MM*M-",
                 "--size", "tiny", "--d-model", 32, "--batch", 2, "--seq-len", 40, "--lr", "1e-2",
                 "--steps", 8, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(l)["loss"] for l in r.stdout.splitlines()]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(model).__name__ == "NemotronHForCausalLM"
    assert len(model.config.layers_block_type) == 5
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


TINY = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"
# Steps of the CLI LoRA/QLoRA fine-tunes: 12 took the held-out loss to ~0.35x its start (the
# tests ask < 0.8x) in about half the time of the 25 they ran before
FT_STEPS = 12


def test_finetune_cli_lora_lowers_held_out_loss_and_writes_a_peft_adapter(tmp_path):
    """LoRA on a small trained model (the previous embedded default, byte-level): a phrase it
    never saw gets a lower held-out loss,
    and the adapter is a PEFT adapter (stock PEFT loads it on transformers' model)."""
    data = tmp_path / "notes.txt"
    data.write_text("mambaweb fine-tunes in the tab; nothing leaves the browser. " * 60)
    out = tmp_path / "adapter"
    r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", out,
                 "--steps", FT_STEPS, "--batch", 2, "--seq-len", 64, "--lr", "5e-3", "--lora-r", 4,
                 "--merge", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [json.loads(l) for l in r.stdout.splitlines()]
    assert [s["step"] for s in steps] == list(range(1, FT_STEPS + 1))
    evals = json.loads([l for l in r.stderr.splitlines() if "eval_loss_before" in l][-1])
    assert evals["eval_loss_after"] < 0.8 * evals["eval_loss_before"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == ["in_proj"]
    import torch
    import transformers
    from peft import PeftModel
    base = transformers.AutoModelForCausalLM.from_pretrained(TINY)
    ids = torch.tensor([list(b"mambaweb fine-tunes")])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out).eval()
        after = tuned(ids).logits
        # --merge: the base with the adapter folded in is an HF folder giving the same logits
        merged = transformers.AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
    assert (after - before).abs().max() > 1e-3
    assert (merged - after).abs().max() <= 1e-4
    # plain errors
    r = mambaweb("finetune", "--model", TINY, "--data", tmp_path / "nope",
                 "--out", out)
    assert r.returncode == 2 and "cannot read --data" in r.stderr


def test_pretrain_cli_trains_a_mamba3(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 80)
    out = tmp_path / "m3"
    r = mambaweb("pretrain", "--corpus", corpus, "--family", "mamba3", "--size", "tiny",
                 "--d-model", 32, "--n-layers", 2, "--batch", 2, "--seq-len", 32, "--lr", "1e-2",
                 "--steps", 6, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(l)["loss"] for l in r.stdout.splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0]
    conf = json.loads((out / "config.json").read_text())
    assert conf["ssm_cfg"]["layer"] == "Mamba3"     # mamba_ssm's layout, as Mamba-3 ships


def test_finetune_cli_qlora_on_a_q4_base(tmp_path):
    """LoRA on a base kept in 4-bit on the GPU (QLoRA): the held-out loss drops, the adapter is
    a PEFT adapter, and modes that would train or rewrite the frozen narrow base are refused."""
    data = tmp_path / "notes.txt"
    data.write_text("mambaweb fine-tunes in the tab; nothing leaves the browser. " * 60)
    out = tmp_path / "qlora"
    r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", out, "--weights", "q4",
                 "--steps", FT_STEPS, "--batch", 2, "--seq-len", 64, "--lr", "5e-3", "--lora-r", 4,
                 timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads([l for l in r.stderr.splitlines() if '"base_formats"' in l][0])
    assert summary["base_formats"] == ["f32", "q4"] and summary["mode"] == "lora"
    evals = json.loads([l for l in r.stderr.splitlines() if "eval_loss_before" in l][-1])
    assert evals["eval_loss_after"] < 0.8 * evals["eval_loss_before"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    for flag in ("--full", "--merge"):
        r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", tmp_path / "x",
                     "--weights", "q4", flag)
        assert r.returncode == 2 and "--weights q4" in r.stderr and "Traceback" not in r.stderr


def test_train_check_a_fresh_hybrid_against_torch(tmp_path):
    """`train-check --arch hybrid --pattern M*M-` without --model: generate-bin's model for the
    flags (kept in OUT/start) trains in the tab with transformers' NemotronH gradients
    (<= 1e-4 x scale; the tied embedding's holds its LM-head part too) and torch AdamW's steps."""
    import torch
    import transformers

    from py_engine.io.layouts import internal_name
    ids = np.random.RandomState(3).randint(0, 64, size=(2, 37)).astype(np.int64)
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out"
    r = mambaweb("train-check", "--arch", "hybrid", "--pattern", "M*M-", "--size", "tiny",
                 "--d-model", 32, "--vocab-size", 64, "--seed", 2, "--ids", tmp_path / "ids.npy",
                 "--out", out, "--steps", 3, "--lr", "1e-2", "--betas", "0.9,0.95",
                 "--eps", "1e-8", "--weight-decay", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out / "start"),
                                                              dtype=torch.float32)
    assert type(model).__name__ == "NemotronHForCausalLM"
    emb = model.get_input_embeddings().weight
    assert torch.equal(model.lm_head.weight, emb)
    model.lm_head.weight = emb                 # tie as the engine does (transformers does not)
    model.train()
    params = dict(model.named_parameters())
    tids = torch.from_numpy(ids)
    loss = model(input_ids=tids, labels=tids, use_cache=False).loss
    loss.backward()
    grads = load_file(out / "grads.safetensors")
    assert {internal_name(k) for k in params} == set(grads)
    for k, p in params.items():
        ref = p.grad.numpy()
        scale = max(np.abs(ref).max(), 1e-12)
        assert np.abs(grads[internal_name(k)] - ref).max() <= 1e-4 * scale, k
    decay = [p for p in params.values() if p.dim() == 2]
    rest = [p for p in params.values() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = model(input_ids=tids, labels=tids, use_cache=False).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-4)
    after = load_file(out / "params.safetensors")
    for k, p in params.items():
        err = np.abs(after[internal_name(k)] - p.detach().numpy())
        assert err.max() <= 0.01 * 3 * 1e-2 and np.median(err) <= 1e-6, k
