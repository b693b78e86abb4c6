"""LoRA in the tab against transformers + PEFT (fixtures: tools/make_lora_fixtures.py) for
Mamba-1, Mamba-2 and a NemotronH hybrid: a PEFT-made adapter loads and gives PEFT's logits;
loss, every adapter gradient and 5 AdamW steps over the adapters alone equal torch's; the
adapter the tab saves loads back in PEFT with the tab's logits."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
LORA = REPO / "tests" / "fixtures" / "lora"
TRAIN = REPO / "tests" / "fixtures" / "train"
BASES = ["mamba-d24-untied", "mamba2-g2-untied", "nemotronh-mamf-untied"]

RUN = """
from py_engine.io.byte_sources import HttpSource
from py_engine.io.hf_loader import load_model
from py_engine.train.lora import load_adapter
from py_engine.train.trainer import Trainer
model = await load_model(device, args['url'])
prompt = args['prompt']
base = await model.logits(prompt)
ad = await load_adapter(model, HttpSource(args['url']))
with_adapter = await model.logits(prompt)
tr = Trainer(model, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=0.0,
             adapter=ad)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['Bsz'], args['T'])
losses = []
for _ in range(5):
    r = await tr.train_step([(args['ids'], args['labels'])], args['Bsz'], args['T'], lr=1e-2)
    losses.append(r['loss'])
params = {n: await t.to_bytes() for n, t in tr.params.items()}
trained = await model.logits(prompt)
files = await ad.to_files('base')
tr.release()
ad.release()
after_release = await model.logits(prompt)
result = {'base': base, 'with': with_adapter, 'grads': grads, 'loss': loss, 'losses': losses,
          'params': params, 'trained': trained, 'files': files, 'after_release': after_release,
          'V': model.cfg.vocab_size}
model.release()
"""


def _join(out, prefix, exp_keys):
    """Engine tensors {peft name[#piece]: bytes} -> {peft name: array}, B pieces re-joined in
    row order (the engine holds a fused in_proj's B as the same row pieces as its weight)."""
    groups = {}
    for k, v in out.items():
        base, _, piece = k.partition("#")
        groups.setdefault(base, []).append((piece, np.frombuffer(v, np.float32)))
    return groups


@pytest.mark.parametrize("name", BASES)
def test_lora_matches_peft(engine, server, scratch_models, tmp_path, name):
    dst = scratch_models / f"lora-{name}"
    if not dst.exists():
        shutil.copytree(TRAIN / name, dst)
        for f in (LORA / name / "adapter").iterdir():
            shutil.copy(f, dst / f.name)
    exp = np.load(LORA / name / "expected.npz")
    texp = np.load(TRAIN / name / "expected.npz")
    ids, labels = texp["input_ids"], texp["labels"]
    Bsz, T = ids.shape
    prompt = exp["prompt_ids"].tolist()
    out = engine.run(RUN, url=f"{server.url}/weights/lora-{name}/", prompt=prompt,
                     ids=ids.ravel().tolist(), labels=labels.ravel().tolist(), Bsz=int(Bsz), T=int(T))
    V, P = out["V"], len(prompt)
    lg = lambda k: np.frombuffer(out[k], np.float32).reshape(P, V)  # noqa: E731
    assert np.abs(lg("base") - exp["base_logits"]).max() <= 1e-4
    assert np.abs(lg("with") - exp["logits"]).max() <= 1e-4
    assert np.abs(exp["logits"] - exp["base_logits"]).max() > 1e-2   # the adapter matters
    assert np.abs(lg("after_release") - exp["base_logits"]).max() <= 1e-4   # detached cleanly
    assert abs(out["loss"] - float(exp["loss"])) <= 1e-5 * max(1.0, abs(float(exp["loss"])))
    # gradients of every adapter tensor (B's row pieces re-joined)
    ref = {k[len("grad."):]: exp[k] for k in exp.files if k.startswith("grad.")}
    got = _join(out["grads"], "grad.", ref)
    assert set(got) == set(ref)
    for k, r in ref.items():
        parts = [a for _, a in sorted(got[k], key=lambda p: _piece_order(p[0], name))]
        g = np.concatenate(parts).reshape(r.shape)
        assert np.abs(g - r).max() <= 1e-4 * max(np.abs(r).max(), 1e-12), k
    np.testing.assert_allclose(out["losses"], exp["adamw_losses"], rtol=1e-4)
    after = _join(out["params"], "adamw.", ref)
    for k in ref:
        r = exp["adamw." + k]
        parts = [a for _, a in sorted(after[k], key=lambda p: _piece_order(p[0], name))]
        err = np.abs(np.concatenate(parts).reshape(r.shape) - r)
        assert err.max() <= 0.01 * 5 * 1e-2 and np.median(err) <= 1e-6, k
    # the adapter the tab saves is a PEFT adapter: PEFT on the base reproduces the tab's logits
    folder = tmp_path / "saved"
    folder.mkdir()
    for fname, data in out["files"].items():
        (folder / fname).write_bytes(data)
    import torch
    import transformers
    from peft import PeftModel
    from tools.make_lora_fixtures import allow_out_proj
    base = transformers.AutoModelForCausalLM.from_pretrained(TRAIN / name, dtype=torch.float32)
    with allow_out_proj():      # stock PEFT refuses out_proj on Mamba types (fused CUDA kernels)
        peft_model = PeftModel.from_pretrained(base, folder).eval()
    with torch.no_grad():
        ref_logits = peft_model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(ref_logits - lg("trained")).max() <= 1e-4


def _piece_order(piece, name):
    # the GPU row pieces of each fused weight, in row order (py_engine/nn/<kind>.py pieces)
    order = {"": 0, "x": 0, "z": 1} if name.startswith("mamba-") else {"": 0, "z": 0, "xBC": 1,
                                                                       "dt": 2}
    return order[piece]


def test_a_default_peft_adapter_is_a_no_op(engine, server, scratch_models):
    name = "mamba2-g2-untied"
    dst = scratch_models / "lora-default"
    if not dst.exists():
        shutil.copytree(TRAIN / name, dst)
        for f in (LORA / name / "adapter_default").iterdir():
            shutil.copy(f, dst / f.name)
    exp = np.load(LORA / name / "expected.npz")
    out = engine.run("""
from py_engine.io.byte_sources import HttpSource
from py_engine.io.hf_loader import load_model
from py_engine.train.lora import load_adapter
m = await load_model(device, args['url'])
base = await m.logits(args['prompt'])
ad = await load_adapter(m, HttpSource(args['url']))
result = {'base': base, 'with': await m.logits(args['prompt']), 'r': ad.r, 'scale': ad.scale}
ad.release()
m.release()
""", url=f"{server.url}/weights/lora-default/", prompt=exp["prompt_ids"].tolist())
    assert out["base"] == out["with"] and out["r"] == 4 and out["scale"] == 2.0
