"""Checks shared by the host tests of the generated parity fixtures (tests/unit/test_mamba2_fixtures.py,
tests/unit/test_hybrid_fixtures.py): folder sizes, the bf16/f16 copies, the greedy generation config and
the training fixture (loss, every gradient, 5 torch AdamW steps) re-run against torch.

Import it after pytest.importorskip("torch") / ("transformers"): it imports both at module level.
"""
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file

FIX = Path(__file__).resolve().parent.parent / "fixtures"
MODELS = FIX / "models"
TRAIN = FIX / "train"
TOL = 1e-5

transformers.logging.set_verbosity_error()


def read_config(folder):
    return json.loads((folder / "config.json").read_text())


def rel(a, b):
    """max |a - b| relative to max(1, max |b|)."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, np.abs(b).max()))


def greedy_config(n_new=16):
    """The generators' greedy decode: n_new tokens, no EOS stop, logits returned."""
    return transformers.GenerationConfig(max_new_tokens=n_new, min_new_tokens=0, do_sample=False, use_cache=True,
                                         eos_token_id=None, pad_token_id=0, bos_token_id=None,
                                         output_logits=True, return_dict_in_generate=True)


def check_folders_present_and_small(dirs):
    for d in dirs:
        assert (d / "expected.npz").is_file() and (d / "config.json").is_file(), d
        for f in d.iterdir():
            assert f.stat().st_size < 300 * 1024, f


def check_low_precision_copy(base, suffix, dtype):
    """models/<base><suffix>/ holds models/<base>/'s f32 tensors rounded to dtype, and its expected
    logits are really those of the rounded weights (they moved)."""
    ref = load_file(MODELS / base / "model.safetensors")
    low = load_file(MODELS / f"{base}{suffix}" / "model.safetensors")
    assert ref.keys() == low.keys()
    for k, v in low.items():
        assert v.dtype == dtype, k
        assert torch.equal(v, ref[k].to(dtype)), k
    a = np.load(MODELS / base / "expected.npz")["logits"]
    b = np.load(MODELS / f"{base}{suffix}" / "expected.npz")["logits"]
    assert np.abs(a - b).max() > 1e-4


def check_training_fixture(model, exp, decay, decay_is_2d=False):
    """model (train mode, at the fixture's initial params) on exp's batch: loss, every gradient (each
    nonzero) and the params after 5 AdamW steps (lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight decay 0.1
    on names ending with `decay`) within TOL of the stored ones. decay_is_2d: the decayed parameters are
    exactly the 2-D ones."""
    ids, labels = torch.from_numpy(exp["input_ids"]), torch.from_numpy(exp["labels"])
    assert ids.shape[1] % model.config.chunk_size != 0 and (labels == -100).sum() == 1
    loss = model(input_ids=ids, labels=labels, use_cache=False).loss
    loss.backward()
    assert abs(loss.item() - float(exp["loss"])) <= TOL
    params = dict(model.named_parameters())
    assert {k[5:] for k in exp.files if k.startswith("grad.")} == set(params)
    assert {k[6:] for k in exp.files if k.startswith("adamw.")} == set(params)
    for k, p in params.items():
        ref = exp["grad." + k]
        assert np.abs(ref).max() > 0, k                                    # every parameter matters
        assert np.abs(p.grad.numpy() - ref).max() <= TOL * max(1.0, np.abs(ref).max()), k
    decayed = [p for k, p in params.items() if k.endswith(decay)]
    rest = [p for k, p in params.items() if not k.endswith(decay)]
    if decay_is_2d:
        assert {k for k in params if k.endswith(decay)} == {k for k, p in params.items() if p.dim() == 2}
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(losses, exp["adamw_losses"], rtol=TOL)
    for k, p in params.items():
        assert np.abs(p.detach().numpy() - exp["adamw." + k]).max() <= TOL, k
