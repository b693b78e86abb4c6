"""A Mamba-1 decode layer in one dispatch (ops/mamba1_persist.py, shaders/lib/mamba1_persist.wgsl:
the layer's four steps as phases of one kernel whose workgroups wait for each phase's inputs
inside it) on the native backend -- lavapipe here, which runs two workgroups at once, so one
and two workgroups are what it can check (a GPU runs 132 and more): step logits, the conv and
ssm states after them, and greedy tokens against the engine's dispatch-a-step decode (the
real-GPU mat-vecs forced), one dispatch a layer, no spin given up; transformers' logits step
by step; Falcon-Mamba's normalised dt_low, B and C; f32, f16, q8 and q4 weights; and what it
refuses (two sequences at once, mixed formats) keeps the engine's path."""
import numpy as np
import pytest

from tests.browser.persist_cases import IDS, RUN, check_persist
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


def _binds_16(engine):
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 16:
        pytest.skip("this adapter binds fewer than 16 storage buffers per stage")


@pytest.mark.parametrize("fmt,tpr", [("f32", None), ("f16", None), ("f16", 16), ("f32", 256)])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied"])
def test_one_dispatch_a_layer_equals_the_engine_step(engine, name, fmt, tpr):
    """One workgroup: every phase's waits are on its own words (deterministic here); 64
    threads a weight row (the rule), 16 and 256."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / name), fmt=fmt, ids=IDS, groups=1, tpr=tpr)
    assert r["fails"] == 0
    check_persist(r)


@pytest.mark.parametrize("name,fmt", [("mamba-d40-tied", "f32"), ("falcon-d40-untied", "f16")])
def test_two_workgroups_wait_for_each_other(engine, name, fmt):
    """Two workgroups, each phase's rows split between them: each waits for the other's words.
    lavapipe runs them on two threads, which a loaded machine may not schedule at once: a wait
    that outlasts its bound gives up and is counted (fails), and such a run proves nothing --
    up to three runs, every run without a give-up must equal the engine's step."""
    _binds_16(engine)
    clean = 0
    for _ in range(3):
        r = engine.run(RUN, folder=str(FIX / name), fmt=fmt, ids=IDS, groups=2)
        if r["fails"] == 0:
            check_persist(r)
            clean += 1
            break
    if not clean:
        pytest.skip("lavapipe did not run the two workgroups at once in three tries")


def test_one_dispatch_a_layer_matches_transformers(engine):
    """Step by step, transformers' logits stored with the fixtures (f32)."""
    _binds_16(engine)
    for name in ("mamba-d40-tied", "falcon-d40-untied"):
        exp = np.load(FIX / name / "expected.npz")
        ids = exp["prompt_ids"].tolist()
        r = engine.run(RUN, folder=str(FIX / name), fmt="f32", ids=ids, groups=1)
        got = np.frombuffer(r["persist"], np.float32).reshape(len(ids), -1)
        assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4, name
        assert r["fails"] == 0


@pytest.fixture(scope="module")
def d64(tmp_path_factory):
    """A random Mamba-1 of d_model 64 (inner 128, dt rank 4, d_state 16; bf16 on disk, as the
    bench writes them): every matrix takes q8's 16 and q4's 32 values a chunk."""
    from tools.cmd_bench import _write_random_model
    folder = tmp_path_factory.mktemp("d64")
    _write_random_model(str(folder), dict(d_model=64, n_layers=2, vocab_size=128))
    return folder


@pytest.mark.parametrize("fmt", ["q8", "q4", "f16"])
def test_narrow_formats_in_one_dispatch(engine, d64, fmt):
    """q8 (a scale a row) and q4 (a scale a group of 32), each scale loaded as its own word,
    against the engine's mat-vecs of the same quantised weights."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(d64), fmt=fmt, ids=IDS, groups=1)
    assert r["fails"] == 0
    check_persist(r)


def test_mixed_formats_keep_the_engine_path(engine):
    """d_model 40 in q8: in_proj's 40 inputs are no whole chunk of 16 (it stays f32), x_proj's
    and out_proj's 80 are (q8): one format is needed."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / "mamba-d40-tied"), fmt="q8", ids=IDS[:3], groups=2)
    assert r["persist_why"] == "weight formats"
    assert r["persist"] == r["plain"] and r["persist_dpt"] == r["plain_dpt"]


def test_a_grid_too_big_to_be_resident_gives_up_and_ends(engine):
    """32 workgroups on lavapipe's few threads: the first ones wait for workgroups that cannot
    start until they end. Their spins give up -- counted -- and the dispatch ends (the tokens
    are then wrong: what a bench reports as persist_fails)."""
    _binds_16(engine)
    r = engine.run(ONE_TOKEN, folder=str(FIX / "mamba-d40-tied"), groups=32)
    assert r["why"] is None and r["fails"] > 0


ONE_TOKEN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.ops import mamba1_persist as MP
m = await load_model_local(device, args['folder'])
device.mamba1_persist = True
device.persist_groups = args['groups']
try:
    st = m.new_state()
    why = MP.applies(device, m.mixers[0], 1, st.layers[0])
    await m.step_logits([3], st)
    st.release()
    result = {'why': why, 'fails': await m._persist_scratch.fails()}
finally:
    device.mamba1_persist = None
    device.persist_groups = None
    m.release()
"""
