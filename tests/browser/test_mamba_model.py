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


RANDOM_STATE = """
import random, struct
from py_engine.io.hf_loader import load_model
model = await load_model(device, args['url'])
ids = [int(i) for i in args['ids']]
rng = random.Random(5)
s1 = model.new_state()
# a random state, as if 7 tokens had been seen: conv history and SSM states of scale ~1
vals = [rng.gauss(0.0, 1.0) for t in s1.tensors() for _ in range(t.numel)]
snap = await s1.to_bytes()
head = snap[:len(snap) - 4 * len(vals)]
head = head.replace(b'"tokens_seen":0', b'"tokens_seen":7')
s1.load_bytes(head + struct.pack(f'<{len(vals)}f', *vals))
s2 = model.new_state()
s2.load_bytes(head + struct.pack(f'<{len(vals)}f', *vals))
fwd = await model.logits(ids, s1)
stp = await model.step_logits(ids, s2)
result = {'forward': fwd, 'step': stp, 'V': model.cfg.vocab_size,
          'fwd_states': [await t.to_bytes() for t in s1.tensors()],
          'step_states': [await t.to_bytes() for t in s2.tensors()]}
for s in (s1, s2):
    s.release()
model.release()
"""


@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied", "mamba-d24-untied"])
def test_forward_equals_unrolled_step_from_a_random_state(engine, server, name):
    """burn-mamba's parity property, from a random (not zero) initial state: the parallel
    path continuing from it and the recurrent path give the same logits and final states."""
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    out = engine.run(RANDOM_STATE, url=f"{server.url}/weights/{name}/", ids=ids)
    V = out["V"]
    fwd = np.frombuffer(out["forward"], np.float32).reshape(len(ids), V)
    stp = np.frombuffer(out["step"], np.float32).reshape(len(ids), V)
    assert np.abs(fwd - stp).max() <= 1e-4 * max(1.0, np.abs(stp).max())
    # the random state matters: the first logits differ from a zero-state run's
    assert np.abs(fwd[0] - exp["logits"].reshape(len(ids), V)[0]).max() > 1e-2
    for a, b in zip(out["fwd_states"], out["step_states"]):
        a, b = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())


SNAPSHOTS = """
from py_engine.io.hf_loader import load_model
m2 = await load_model(device, args['m2'])
m1 = await load_model(device, args['m1'])
s2, s1 = m2.new_state(), m1.new_state()
snap2 = await s2.to_bytes()
errors = {}
for label, fn in (('v2 into mamba1', lambda: s1.load_bytes(snap2)),
                  ('v1 into mamba2', lambda: s2.load_bytes(b'MWST' + bytes(16))),
                  ('bad magic', lambda: s2.load_bytes(b'XXXX' + bytes(16))),
                  ('truncated', lambda: s2.load_bytes(snap2[:-4]))):
    try:
        fn()
        errors[label] = None
    except ValueError as e:
        errors[label] = str(e)
s2.load_bytes(snap2)          # its own snapshot loads
result = {'errors': errors, 'head': snap2[:4]}
for x in (s1, s2, m1, m2):
    x.release()
"""


def test_state_snapshots_record_layer_kinds(engine, server):
    out = engine.run(SNAPSHOTS, m2=f"{server.url}/weights/mamba2-g1-tied/",
                     m1=f"{server.url}/weights/mamba-d24-untied/")
    e = out["errors"]
    assert out["head"] == b"MWS2"
    assert "snapshot is for layers 2 x mamba2; this model has 2 x mamba1" in e["v2 into mamba1"]
    assert "version-1 state snapshot" in e["v1 into mamba2"]
    assert "bad magic" in e["bad magic"]
    assert "truncated" in e["truncated"]
