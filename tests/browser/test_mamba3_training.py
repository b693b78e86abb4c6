"""Mamba-3 trains in the tab: the loss and every parameter gradient of a whole LM equal torch
float64 autograd of an independent re-implementation (tests/unit/test_mamba3_reference.py's
torch mixers, SISO and MIMO, themselves checked against the float64 reference), and a few AdamW
steps lower the loss. SISO with and without is_outproj_norm, MIMO of rank 2 and 4 (the latter with
the head-wise norm). check_gradients runs on the native backend too
(tests/unit/test_mamba3_training_native.py)."""
import json

import numpy as np
import pytest

from py_engine.io import gpu_layout
from py_engine.io.layouts import internal_name
from py_engine.models.config import MambaConfig
from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIX = REPO / "tests" / "fixtures" / "models"

# f32 through two layers of scans and their backward: measured 3e-6..7e-5 of each gradient's scale
# on lavapipe, up to 1.05e-4 on SwiftShader (B_norm.weight of the is_outproj_norm fixture)
TOL = 2e-4
NAMES = ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus", "mamba3-g2-r10-untied-onorm",
         "mamba3-mimo-r2-g1-r05-tied", "mamba3-mimo-r4-g2-r10-onorm-softplus"]

RUN = """
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.train.trainer import Trainer
src = args['url']
model = await (load_model(device, src) if src.startswith('http') else load_model_local(device, src))
tr = Trainer(model, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0)
grads, loss = await tr.gradients(args['ids'], args['ids'], args['Bsz'], args['T'])
losses = []
for _ in range(4):
    r = await tr.train_step([(args['ids'], args['ids'])], args['Bsz'], args['T'])
    losses.append(r['loss'])
result = {'grads': grads, 'loss': loss, 'losses': losses}
tr.release()
model.release()
"""


def torch_loss(folder, ids_bt):
    import torch
    from safetensors.torch import load_file
    from tests.unit.test_mamba3_reference import torch_mixer_from_zero
    conf = json.loads((folder / "config.json").read_text())
    cfg = dict(conf["ssm_cfg"], d_model=conf["d_model"])
    W = {k: v.double().requires_grad_() for k, v in load_file(folder / "model.safetensors").items()}
    emb = W["backbone.embedding.weight"]
    head = emb if conf.get("tie_embeddings", True) else W["lm_head.weight"]
    rms = lambda v, w: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    total, count = 0.0, 0
    for ids in ids_bt:
        r = emb[torch.tensor(ids)]
        for i in range(conf["n_layer"]):
            pre = f"backbone.layers.{i}."
            p = {k[len(pre) + 6:]: v for k, v in W.items() if k.startswith(pre + "mixer.")}
            r = r + torch_mixer_from_zero(p, cfg, rms(r, W[pre + "norm.weight"]))
        logits = rms(r, W["backbone.norm_f.weight"]) @ head.T
        lp = torch.log_softmax(logits[:-1], -1)
        tgt = torch.tensor(ids[1:])
        total = total - lp[torch.arange(len(tgt)), tgt].sum()
        count += len(tgt)
    loss = total / count
    loss.backward()
    return float(loss.detach()), {internal_name(k): v.grad.numpy() for k, v in W.items()
                         if v.grad is not None}


def check_gradients(engine, source, name):
    """Loss and every parameter gradient of fixture `name` (loaded from `source`, a URL or a local
    folder) vs torch float64 autograd; AdamW steps lower the loss."""
    folder = FIX / name
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"][:12].tolist() + exp["prompt_ids"][-12:].tolist()
    Bsz, T = 2, 12
    out = engine.run(RUN, url=source, ids=ids, Bsz=Bsz, T=T)
    loss, ref = torch_loss(folder, [ids[:T], ids[T:]])
    assert abs(out["loss"] - loss) <= 1e-5 * max(1.0, abs(loss))
    cfg = MambaConfig.from_hf_dict(json.loads((folder / "config.json").read_text()))
    tied = json.loads((folder / "config.json").read_text()).get("tie_embeddings", True)
    checked, seen = set(), set()
    for hname, g in ref.items():
        if hname == "lm_head.weight" and tied:
            continue      # tied: its gradient is in the embedding's (torch used emb for the head)
        pieces = gpu_layout.pieces(cfg, hname, g.shape)
        got = np.concatenate([np.frombuffer(out["grads"][p], np.float32).reshape(-1)
                              for p, _, _, _ in pieces]).reshape(g.shape)
        scale = max(np.abs(g).max(), 1e-12)
        assert np.abs(got - g).max() <= TOL * scale, (hname, np.abs(got - g).max() / scale)
        assert np.abs(g).max() > 1e-6, hname      # a gradient that flows, not a pair of zeros
        checked.add(hname.split(".mixer.")[-1])
        seen.update(p for p, _, _, _ in pieces)
    assert seen == set(out["grads"]), sorted(seen ^ set(out["grads"]))   # every trained tensor
    want = {"in_proj.weight", "out_proj.weight", "dt_bias", "D", "B_bias", "C_bias",
            "B_norm.weight", "C_norm.weight"}
    want |= {"norm.weight"} if cfg.is_outproj_norm else set()
    want |= {"mimo_x", "mimo_z", "mimo_o"} if cfg.is_mimo else set()
    assert want <= checked, sorted(want - checked)
    assert out["losses"][-1] < out["losses"][0]     # AdamW steps lower it


# SwiftShader is slow: the browser runs one SISO-onorm and one MIMO fixture (the native run, on
# lavapipe, checks all of NAMES)
@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm",
                                  "mamba3-mimo-r4-g2-r10-onorm-softplus"])
def test_mamba3_gradients_match_torch(engine, server, name):
    check_gradients(engine, f"{server.url}/weights/{name}/", name)


def test_pretrain_cli_trains_a_mimo_mamba3(tmp_path):
    """`mambaweb pretrain --family mamba3 --mimo-rank 2`: a few steps lower the loss and the
    folder is a MIMO Mamba-3 in mamba_ssm's layout."""
    from safetensors.numpy import load_file
    from tests.browser.test_training_cli import mambaweb
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 80)
    out = tmp_path / "m3"
    r = mambaweb("pretrain", "--corpus", corpus, "--family", "mamba3", "--mimo-rank", 2,
                 "--size", "tiny", "--d-model", 32, "--n-layers", 2, "--batch", 2, "--seq-len", 32,
                 "--lr", "1e-2", "--steps", 5, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in r.stdout.splitlines()]
    assert len(losses) == 5 and losses[-1] < 0.9 * losses[0]
    ssm = json.loads((out / "config.json").read_text())["ssm_cfg"]
    assert (ssm["layer"], ssm["is_mimo"], ssm["mimo_rank"]) == ("Mamba3", True, 2)
    W = load_file(str(out / "model.safetensors"))
    assert np.abs(W["backbone.layers.0.mixer.mimo_o"] - 0.5).max() > 0    # trained, not the init
