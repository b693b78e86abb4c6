"""Mamba-1 / Falcon-Mamba in the browser against transformers (fixtures made by
tools/make_fixtures.py): logits at every position within 1e-4 for f32, bf16 and f16 weights,
forward == unrolled step (logits and every layer's final states)."""
import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIXTURES = REPO / "tests" / "fixtures" / "models"
MODELS = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.npz").exists())

RUN = """
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
model = await load_model(device, args['url'])
ids = [int(i) for i in args['ids']]
state = model.new_state()
fwd = await model.logits(ids, state)
fwd_states = [await t.to_bytes() for t in state.tensors()]
state2 = model.new_state()
stp = await model.step_logits(ids, state2)
stp_states = [await t.to_bytes() for t in state2.tensors()]
result = {'forward': fwd, 'step': stp, 'fwd_states': fwd_states, 'step_states': stp_states,
          'V': model.cfg.vocab_size}
for s in (state, state2):
    s.release()
model.release()
"""


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers(engine, server, name):
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    out = engine.run(RUN, url=f"{server.url}/weights/{name}/", ids=ids)
    V = out["V"]
    fwd = np.frombuffer(out["forward"], np.float32).reshape(len(ids), V)
    stp = np.frombuffer(out["step"], np.float32).reshape(len(ids), V)
    ref = exp["logits"].reshape(len(ids), V)
    assert np.abs(fwd - ref).max() <= 1e-4, np.abs(fwd - ref).max()
    assert np.abs(stp - ref).max() <= 1e-4, np.abs(stp - ref).max()
    # forward and unrolled step leave the same recurrent state in every layer
    for a, b in zip(out["fwd_states"], out["step_states"]):
        a, b = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())
    # and it is transformers' cache: conv [I, K] and ssm [I, N] per layer
    for i in range(len(out["fwd_states"]) // 2):
        conv = np.frombuffer(out["fwd_states"][2 * i], np.float32)
        ssm = np.frombuffer(out["fwd_states"][2 * i + 1], np.float32)
        assert np.abs(conv - exp["conv_state"][i].ravel()).max() <= 1e-5 * max(1, np.abs(exp["conv_state"][i]).max())
        assert np.abs(ssm - exp["ssm_state"][i].ravel()).max() <= 1e-4 * max(1, np.abs(exp["ssm_state"][i]).max())
