"""mamba_ssm hybrids (MambaLMHeadModel with attention layers and gated SwiGLU MLPs) in the engine.

Fixtures: tools/make_mamba_ssm_hybrid_fixtures.py (tests/fixtures/mamba_ssm/, mamba_ssm config.json
and tensor names; float64 pure-PyTorch reference written from state-spaces/mamba's modules).
  * logits at every position within 1e-4 of the reference on the parallel (prefill) path and on
    the recurrent (decode) path, and every SSM state / KV cache equal to the reference's;
  * greedy 16 tokens equal the reference's argmax continuation;
  * training: the loss and every parameter gradient (the gated MLP's fused fc1, the attention's
    fused in_proj row blocks and biases, RoPE) equal torch float64 autograd of the same reference.
The same functions run on the native backend (tests/unit/test_native_backend.py imports them).
"""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIX = REPO / "tests" / "fixtures" / "mamba_ssm"
NAMES = ["m2-attn-mlp-tied", "m1-attn-untied"]


@pytest.fixture(scope="module")
def model_url(server, scratch_models):
    """name -> the URL the browser engine loads the fixture folder from."""
    def url(name):
        dst = scratch_models / f"mamba-ssm-{name}"
        if not dst.exists():
            shutil.copytree(FIX / name, dst)
        return f"{server.url}/weights/mamba-ssm-{name}/"
    return url


LOAD = """
from py_engine.io.hf_loader import load_model, load_model_local
src = args['url']
model = await (load_model(device, src) if src.startswith('http') else load_model_local(device, src))
"""

RUN = LOAD + """
from py_engine.models.generate import SamplingConfig, generate
ids = [int(i) for i in args['ids']]
state = model.new_state(max_tokens=len(ids) + 4)
fwd = await model.logits(ids, state)
fwd_states = [[await t.to_bytes() for t in layer.tensors()] for layer in state.layers]
state2 = model.new_state(max_tokens=len(ids) + 4)
stp = await model.step_logits(ids, state2)
stp_states = [[await t.to_bytes() for t in layer.tensors()] for layer in state2.layers]
new = await generate(model, ids, 16, SamplingConfig(greedy=True))
result = {'forward': fwd, 'step': stp, 'fwd_states': fwd_states, 'step_states': stp_states,
          'V': model.cfg.vocab_size, 'kinds': model.cfg.layers, 'greedy': list(new)}
for s in (state, state2):
    s.release()
model.release()
"""

STATE_KEYS = {"mamba1": ("conv_state", "ssm_state"), "mamba2": ("conv_state", "ssm_state"),
              "attention": ("key_cache", "value_cache"), "gated_mlp": ()}


def _check_states(got, kinds, exp, T, tol):
    index = {}
    for layer, kind in zip(got, kinds):
        keys = STATE_KEYS[kind]
        group = "ssm" if kind.startswith("mamba") else kind
        j = index.setdefault(group, 0)
        index[group] = j + 1
        for raw, key in zip(layer, keys):
            ref = exp[key][j].astype(np.float64)
            a = np.frombuffer(raw, np.float32)
            if kind == "attention":      # our cache [KVH, Tmax, Dh]: the first T slots
                a = a.reshape(ref.shape[0], -1, ref.shape[-1])[:, :T]
            a = a.reshape(ref.shape)
            assert np.abs(a - ref).max() <= tol * max(1.0, np.abs(ref).max()), (kind, key, j)
    assert index.get("ssm", 0) == len(exp["ssm_state"])


def check_logits_states_and_greedy(engine, source, name):
    exp = np.load(FIX / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    out = engine.run(RUN, url=source, ids=ids)
    V, T = out["V"], len(ids)
    conf = json.loads((FIX / name / "config.json").read_text())
    blocks = ["attention" if i in conf["attn_layer_idx"] else
              {"Mamba1": "mamba1", "Mamba2": "mamba2"}[conf["ssm_cfg"]["layer"]]
              for i in range(conf["n_layer"])]
    if conf["d_intermediate"]:      # a gated MLP after every mixer: two schedule layers a block
        blocks = [k for b in blocks for k in (b, "gated_mlp")]
    assert out["kinds"] == blocks
    ref = exp["logits"].astype(np.float64)
    fwd = np.frombuffer(out["forward"], np.float32).reshape(T, V)
    stp = np.frombuffer(out["step"], np.float32).reshape(T, V)
    assert np.abs(fwd - ref).max() <= 1e-4, np.abs(fwd - ref).max()
    assert np.abs(stp - ref).max() <= 1e-4, np.abs(stp - ref).max()
    assert np.abs(fwd - stp).max() <= 1e-4
    _check_states(out["fwd_states"], out["kinds"], exp, T, 1e-4)
    _check_states(out["step_states"], out["kinds"], exp, T, 1e-4)
    assert out["greedy"] == exp["greedy_ids"].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_logits_states_and_greedy_match_reference(engine, model_url, name):
    check_logits_states_and_greedy(engine, model_url(name), name)


TRAIN = LOAD + """
from py_engine.train.trainer import Trainer
tr = Trainer(model, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['Bsz'], args['T'])
losses = []
for _ in range(4):
    r = await tr.train_step([(args['ids'], args['labels'])], args['Bsz'], args['T'])
    losses.append(r['loss'])
result = {'grads': grads, 'loss': loss, 'losses': losses}
tr.release()
model.release()
"""


def torch_loss_and_grads(name, ids, labels):
    """Mean next-token cross-entropy of the float64 reference over a [Bsz, T] batch (labels
    shifted as transformers does; -100 ignored), and
    {engine piece name: gradient} (mamba_ssm names mapped, fused tensors cut into pieces)."""
    import torch
    from safetensors.torch import load_file
    from py_engine.io import gpu_layout
    from py_engine.io.layouts import internal_name
    from py_engine.models.config import MambaConfig
    from tools.make_mamba_ssm_hybrid_fixtures import forward
    conf = json.loads((FIX / name / "config.json").read_text())
    cfg = MambaConfig.from_hf_dict(conf)
    W = {k: v.double().requires_grad_() for k, v in
         load_file(FIX / name / "model.safetensors").items()}
    if conf["tie_embeddings"]:
        del W["lm_head.weight"]
        W["lm_head.weight"] = W["backbone.embedding.weight"]
    losses = []
    for row_ids, row_labels in zip(ids, labels):
        logits, _ = forward(conf, W, torch.tensor(row_ids))
        # transformers' convention, as the Trainer: position t predicts labels[t + 1]
        losses.append(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(row_labels[1:]),
                                                        ignore_index=-100, reduction="sum"))
    n = int((np.asarray(labels)[:, 1:] != -100).sum())
    loss = sum(losses) / n
    loss.backward()
    out = {}
    for k, v in W.items():
        if k == "lm_head.weight" and conf["tie_embeddings"]:
            continue
        name_ = internal_name(k, cfg)
        g = v.grad.numpy()
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, name_, g.shape):
            out[piece] = g.reshape(g.shape[0], -1)[r0:r1].reshape(shape)
    return float(loss.detach()), out


def check_gradients(engine, source, name):
    rng = np.random.RandomState(3)
    conf = json.loads((FIX / name / "config.json").read_text())
    Bsz, T = 2, 11
    ids = rng.randint(0, conf["vocab_size"], size=(Bsz, T))
    labels = ids.copy()
    labels[1, 5] = -100
    out = engine.run(TRAIN, url=source, ids=ids.ravel().tolist(), labels=labels.ravel().tolist(),
                     Bsz=Bsz, T=T)
    loss, ref = torch_loss_and_grads(name, ids.tolist(), labels.tolist())
    assert abs(out["loss"] - loss) <= 1e-5 * max(1.0, abs(loss)), (out["loss"], loss)
    assert set(out["grads"]) == set(ref), sorted(set(out["grads"]) ^ set(ref))
    for piece, g in ref.items():
        got = np.frombuffer(out["grads"][piece], np.float32).reshape(g.shape)
        scale = max(1.0, np.abs(g).max())
        assert np.abs(got - g).max() <= 1e-4 * scale, (piece, np.abs(got - g).max())
    assert out["losses"][-1] < out["losses"][0]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_torch_autograd(engine, model_url, name):
    check_gradients(engine, model_url(name), name)
