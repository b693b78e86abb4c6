"""Mamba-2 decode with the gated RMSNorm folded into out_proj's mat-vec (GATED in
shaders/lib/matvec_rows.wgsl, py_engine/ops/linear.gated_norm_accumulate) on the native backend
(lavapipe here) with the real-GPU decode kernels forced: step logits for one and two sequences
and greedy tokens against the separate gated_rmsnorm + out_proj dispatches (the sums meet in
another order: 1e-5, not bit for bit), one dispatch fewer per layer where the norm has one
group, none fewer where it has several; the fixture's step logits against transformers.
"""
import numpy as np
import pytest

from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"
IDS = [1, 5, 9, 2, 7, 3, 11, 4]

RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.matvec_stage = args['stage']
out = {}
try:
    for fold in (False, True):
        device.fuse_gated_norm = fold
        key = 'fold' if fold else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        st.release()
        st = m.new_state(Bsz=2)               # two sequences at once: the mat-vec's M = 2
        rows = []
        for a, b2 in zip(args['ids'], reversed(args['ids'])):
            t = m.ids_tensor([a, b2])
            batch = device.batch()
            logits = m.step(batch, t, st)
            batch.submit()
            rows.append(await logits.to_bytes())
            logits.release()
            t.release()
        out[key + '_b2'] = b''.join(rows)
        st.release()
        gen = Generator(m, SamplingConfig(greedy=True), max_tokens=64, group=8)
        out[key + '_tokens'] = [t async for t in gen.stream(args['ids'], 12)]
        out[key + '_dpt'] = gen.dispatches_per_token
        gen.release()
finally:
    device.force_matvec = False
    device.matvec_stage = None
    device.fuse_gated_norm = True
out['layers'] = m.cfg.num_hidden_layers
out['groups'] = m.cfg.n_groups
m.release()
result = out
"""


def run(engine, folder, fmt, stage=None, ids=IDS):
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids, stage=stage)
    for key in ("", "_b2"):
        a = np.frombuffer(r["plain" + key], np.float32)
        b = np.frombuffer(r["fold" + key], np.float32)
        assert np.abs(a).max() > 0.05
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max()), (key, np.abs(a - b).max())
    assert r["fold_tokens"] == r["plain_tokens"]
    fewer = r["layers"] if r["groups"] == 1 else 0
    assert r["fold_dpt"] == r["plain_dpt"] - fewer
    return r


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8"])
@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied"])
def test_folded_gated_norm_equals_the_separate_dispatches(engine, name, fmt):
    run(engine, FIX / name, fmt)


@pytest.mark.parametrize("fmt, stage", [("f32", None), ("q4", None), ("q4", True)])
def test_the_default_model_folds_its_gated_norms(engine, fmt, stage):
    """models/default (Mamba-2 d256 x 8, one group): out_proj's K = 512 takes q4 too, and the
    staged x (opt-in) stages the gated, normalised input."""
    folder = REPO / "models" / "default"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("models/default is not built here")
    run(engine, folder, fmt, stage, ids=[72, 101, 108, 108, 111, 32, 119])


def test_folded_step_matches_transformers(engine):
    """Step by step through the folded decode: transformers' logits stored with the fixture."""
    folder = FIX / "mamba2-g1-tied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None)
    got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
    assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4
