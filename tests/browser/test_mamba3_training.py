"""Mamba-3 trains in the tab: the loss and every parameter gradient of a whole LM equal torch
float64 autograd of an independent re-implementation (tests/unit/test_mamba3_reference.py's
torch mixer, itself checked against the float64 reference), and a few AdamW steps lower the loss."""
import json

import numpy as np
import pytest

from py_engine.io import gpu_layout
from py_engine.io.layouts import internal_name
from py_engine.models.config import MambaConfig
from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIX = REPO / "tests" / "fixtures" / "models"

RUN = """
from py_engine.io.hf_loader import load_model
from py_engine.train.trainer import Trainer
model = await load_model(device, args['url'])
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
    from tests.unit.test_mamba3_reference import torch_mixer
    conf = json.loads((folder / "config.json").read_text())
    cfg = dict(conf["ssm_cfg"], d_model=conf["d_model"])
    W = {k: v.double().requires_grad_() for k, v in load_file(folder / "model.safetensors").items()}
    emb = W["backbone.embedding.weight"]
    head = emb if conf.get("tie_embeddings", True) else W["lm_head.weight"]
    d, I, N = cfg["d_model"], cfg["expand"] * cfg["d_model"], cfg["d_state"]
    H, S = I // cfg["headdim"], int(N * cfg["rope_fraction"]) // 2
    rms = lambda v, w: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    total, count = 0.0, 0
    for ids in ids_bt:
        r = emb[torch.tensor(ids)]
        for i in range(conf["n_layer"]):
            pre = f"backbone.layers.{i}."
            p = {k[len(pre) + 6:]: v for k, v in W.items() if k.startswith(pre + "mixer.")}
            st = (torch.zeros(H, S, dtype=torch.float64),
                  torch.zeros(H, cfg["headdim"], N, dtype=torch.float64),
                  torch.zeros(H, N, dtype=torch.float64),
                  torch.zeros(H, cfg["headdim"], dtype=torch.float64))
            out, _ = torch_mixer(p, cfg, rms(r, W[pre + "norm.weight"]), st)
            r = r + out
        logits = rms(r, W["backbone.norm_f.weight"]) @ head.T
        lp = torch.log_softmax(logits[:-1], -1)
        tgt = torch.tensor(ids[1:])
        total = total - lp[torch.arange(len(tgt)), tgt].sum()
        count += len(tgt)
    loss = total / count
    loss.backward()
    return float(loss), {internal_name(k): v.grad.numpy() for k, v in W.items()
                         if v.grad is not None}


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus"])
def test_mamba3_gradients_match_torch(engine, server, name):
    folder = FIX / name
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"][:12].tolist() + exp["prompt_ids"][-12:].tolist()
    Bsz, T = 2, 12
    out = engine.run(RUN, url=f"{server.url}/weights/{name}/", ids=ids, Bsz=Bsz, T=T)
    loss, ref = torch_loss(folder, [ids[:T], ids[T:]])
    assert abs(out["loss"] - loss) <= 1e-5 * max(1.0, abs(loss))
    cfg = MambaConfig.from_hf_dict(json.loads((folder / "config.json").read_text()))
    checked = 0
    for hname, g in ref.items():
        if hname == "lm_head.weight":
            continue      # tied: its gradient is in the embedding's (torch used emb for the head)
        pieces = gpu_layout.pieces(cfg, hname, g.shape)
        got = np.concatenate([np.frombuffer(out["grads"][p], np.float32).reshape(-1)
                              for p, _, _, _ in pieces]).reshape(g.shape)
        scale = max(np.abs(g).max(), 1e-12)
        assert np.abs(got - g).max() <= 1e-4 * scale, (hname, np.abs(got - g).max() / scale)
        checked += 1
    assert checked >= 2 + 2 * 8
    assert out["losses"][-1] < out["losses"][0]     # AdamW steps lower it
