"""Every model family in the browser against transformers (fixtures made by tools/make_*fixtures.py:
Mamba-1, Falcon-Mamba, Mamba-2, NemotronH hybrids): logits at every position within 1e-4 for f32,
bf16 and f16 weights on the parallel and the recurrent path, every layer's state / KV cache equal
to transformers' cache, forward == unrolled step from a random state."""
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
state = model.new_state(max_tokens=len(ids) + 4)
fwd = await model.logits(ids, state)
fwd_states = [[await t.to_bytes() for t in layer.tensors()] for layer in state.layers]
state2 = model.new_state(max_tokens=len(ids) + 4)
stp = await model.step_logits(ids, state2)
stp_states = [[await t.to_bytes() for t in layer.tensors()] for layer in state2.layers]
result = {'forward': fwd, 'step': stp, 'fwd_states': fwd_states, 'step_states': stp_states,
          'V': model.cfg.vocab_size, 'kinds': model.cfg.layers}
for s in (state, state2):
    s.release()
model.release()
"""
# expected.npz keys of each layer kind's state tensors, in the kind's State.tensors() order;
# each is stacked over that kind's layers
STATE_KEYS = {"mamba1": ("conv_state", "ssm_state"), "mamba2": ("conv_state", "ssm_state"),
              "attention": ("key_cache", "value_cache"), "mlp": (),
              "mamba3": ("angle_state", "ssm_state", "k_state", "v_state")}


def _check_states(got, kinds, exp, prefix, T, tol):
    index = {}
    for layer, kind in zip(got, kinds):
        keys = STATE_KEYS[kind]
        group = "ssm" if kind.startswith("mamba") else kind
        j = index.setdefault(group, 0)
        index[group] = j + 1
        for raw, key in zip(layer, keys):
            ref = exp[prefix + key][j].astype(np.float64)
            a = np.frombuffer(raw, np.float32)
            if kind == "attention":      # our cache [KVH, Tmax, Dh]: the first T slots
                a = a.reshape(ref.shape[0], -1, ref.shape[-1])[:, :T]
            a = a.reshape(ref.shape)
            assert np.abs(a - ref).max() <= tol * max(1.0, np.abs(ref).max()), (kind, key, j)


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_transformers(engine, server, name):
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    out = engine.run(RUN, url=f"{server.url}/weights/{name}/", ids=ids)
    V, T = out["V"], len(ids)
    fwd = np.frombuffer(out["forward"], np.float32).reshape(T, V)
    stp = np.frombuffer(out["step"], np.float32).reshape(T, V)
    ref = exp["logits"].reshape(T, V)
    # NemotronH's decode path does not clamp dt as its prefill does: its own step logits differ
    ref_step = exp["step_logits"].reshape(T, V) if "step_logits" in exp.files else ref
    assert np.abs(fwd - ref).max() <= 1e-4, np.abs(fwd - ref).max()
    assert np.abs(stp - ref_step).max() <= 1e-4, np.abs(stp - ref_step).max()
    # every layer's recurrent state / KV cache is transformers' cache after the prompt, on both
    _check_states(out["fwd_states"], out["kinds"], exp, "", T, 1e-4)
    _check_states(out["step_states"], out["kinds"], exp,
                  "step_" if "step_logits" in exp.files else "", T, 1e-4)


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


@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied", "mamba-d24-untied",
                                  "mamba3-mimo-r2-g1-r05-tied",
                                  "mamba3-mimo-r4-g2-r10-onorm-softplus"])
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
