"""`mambaweb train-torch` on CPU (gloo): 2-process DDP and FSDP equal one process over the same
global batch (losses and final parameters <= 1e-5), an interrupted run resumed equals the
uninterrupted one, bf16 runs, batches are the tab's, and the families transformers has no
class for are refused with the reason."""
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import REPO
from tests.train_torch_helpers import make_corpus, make_model, steps_of, train_torch

# global batch 4 sequences x 32 tokens, 2 micro-batches per step (grad accumulation)
COMMON = ["--steps", 3, "--batch", 4, "--seq-len", 32, "--grad-accum", 2, "--lr", "5e-3"]
FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_torch")
    model = make_model(root / "mamba", "mamba1")
    corpus = make_corpus(root / "corpus.txt")
    single = root / "single"
    recs = steps_of(train_torch("--model", model, "--data", corpus, "--out", single, *COMMON,
                                "--save-every", 2))
    return {"root": root, "model": model, "corpus": corpus, "single": single, "recs": recs}


def _assert_same_run(recs, ref_recs, out, ref_out, tol=1e-5):
    assert [r["step"] for r in recs] == [r["step"] for r in ref_recs]
    np.testing.assert_allclose([r["loss"] for r in recs], [r["loss"] for r in ref_recs],
                               rtol=0, atol=tol)
    a, b = load_file(out / "model.safetensors"), load_file(ref_out / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= tol, k


def test_one_process_trains_and_writes_an_hf_folder(base):
    recs = base["recs"]
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(r["tokens_per_s"] > 0 and r["world"] == 1 for r in recs)
    assert recs[-1]["tokens"] == 3 * 4 * 32 * 2
    out = base["single"]
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "torch_train_state.safetensors"} <= {p.name for p in out.iterdir()}
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    # the weights moved, and transformers loads the folder as it is
    start, end = load_file(base["model"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(np.abs(start[k] - end[k]).max() > 1e-4 for k in start)
    import transformers
    m = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(m).__name__ == "MambaForCausalLM"


def test_two_process_ddp_equals_one_process(base):
    out = base["root"] / "ddp"
    recs = steps_of(train_torch("--model", base["model"], "--data", base["corpus"], "--out",
                                out, *COMMON, nproc=2))
    assert all(r["world"] == 2 for r in recs)
    _assert_same_run(recs, base["recs"], out, base["single"])


def test_two_process_fsdp_equals_one_process(base):
    out = base["root"] / "fsdp"
    p = train_torch("--model", base["model"], "--data", base["corpus"], "--out", out, *COMMON,
                    "--fsdp", nproc=2)
    _assert_same_run(steps_of(p), base["recs"], out, base["single"])
    assert "FSDP, 2 x cpu" in p.stderr


def test_resume_two_steps_then_one_equals_three_steps(base):
    """The 1-process run's step-2 checkpoint, resumed for its last step by 2-process FSDP
    (the state is whole tensors by name, whatever the world size or sharding: here its
    moments are sharded on load), ends where the 3-step run ended."""
    out = base["root"] / "resumed"
    p = train_torch("--model", base["model"], "--data", base["corpus"], "--out", out,
                    "--resume", base["single"] / "checkpoint-2", "--fsdp", nproc=2)
    recs = steps_of(p)
    assert "starting at step 2 of 3" in p.stderr
    _assert_same_run(recs, base["recs"][2:], out, base["single"])
    a = load_file(out / "torch_train_state.safetensors")
    b = load_file(base["single"] / "torch_train_state.safetensors")
    assert set(a) == set(b) and all(np.abs(a[k] - b[k]).max() <= 1e-5 for k in a)
    # settings the data order depends on cannot change on resume
    p = train_torch("--model", base["model"], "--data", base["corpus"], "--out", out,
                    "--resume", base["single"] / "checkpoint-2", "--batch", 8)
    assert p.returncode == 2 and "--batch cannot change when resuming" in p.stderr


def test_bf16_smoke(base):
    out = base["root"] / "bf16"
    recs = steps_of(train_torch("--model", base["model"], "--data", base["corpus"], "--out",
                                out, "--steps", 2, "--batch", 2, "--seq-len", 32,
                                "--dtype", "bf16"))
    assert len(recs) == 2 and all(np.isfinite(r["loss"]) for r in recs)
    assert abs(recs[0]["loss"] - base["recs"][0]["loss"]) < 0.1   # bf16 rounding, same data
    w = load_file(out / "model.safetensors")
    assert all(v.dtype == np.float32 for v in w.values())         # f32 master weights


def test_rank_batches_are_the_tabs_batches():
    from py_engine.train.data import Batcher
    from tools.train_torch.data import RankBatches
    ids = list(range(1000))
    tab = Batcher(ids, 16, 4, seed=3)
    ranks = [RankBatches(ids, 16, 4, 3, r, 2) for r in range(2)]
    for _ in range(5):
        want = np.array(tab.next_batch()).reshape(4, 16)
        got = np.concatenate([rb.next("cpu").numpy() for rb in ranks])
        assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="--batch 3 is not a multiple of the 2 processes"):
        RankBatches(ids, 16, 3, 0, 0, 2)


def test_refusals_name_the_reason(tmp_path):
    corpus = make_corpus(tmp_path / "c.txt", 50)
    p = train_torch("--model", FIX / "mamba3-g1-r05-tied", "--data", corpus, "--out", tmp_path / "o")
    assert p.returncode == 2
    assert "Mamba-3" in p.stderr and "transformers has no Mamba-3 class" in p.stderr
    assert "keep training it in the tab" in p.stderr
    p = train_torch("--model", FIX / "mamba2-g1-tied-ssm", "--data", corpus, "--out", tmp_path / "o")
    assert p.returncode == 2 and "mambaweb convert" in p.stderr
    p = train_torch("--model", FIX / "mamba-d24-untied", "--data", corpus, "--out", tmp_path / "o")
    assert p.returncode == 2 and "no tokenizer.json" in p.stderr
