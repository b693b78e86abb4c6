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

from tests.browser.persist_cases import IDS, RUN, check_persist, close
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


def _binds_16(engine):
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 16:
        pytest.skip("this adapter binds fewer than 16 storage buffers per stage")


@pytest.mark.parametrize("name,fmt,tpr", [
    ("mamba-d40-tied", "f32", None), ("mamba-d40-tied", "f16", None),
    ("falcon-d40-untied", "f32", None), ("falcon-d40-untied", "f16", None),
    ("mamba-d40-tied", "f16", 16), ("falcon-d40-untied", "f32", 256)])
def test_one_dispatch_a_layer_equals_the_engine_step(engine, name, fmt, tpr):
    """One workgroup: every phase's waits are on its own words (deterministic here); 64
    threads a weight row (the rule), 16 and 256."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / name), fmt=fmt, ids=IDS, groups=1, tpr=tpr)
    assert r["fails"] == 0
    check_persist(r)


@pytest.mark.parametrize("name,fmt,groups", [("mamba-d40-tied", "f32", 2),
                                             ("falcon-d40-untied", "f16", 2),
                                             ("mamba-d40-tied", "f16", 32)])
def test_more_workgroups_than_one(engine, name, fmt, groups):
    """Two workgroups, each phase's blocks split between them, each waiting for the other's
    words; and 32, more than lavapipe runs at once (its two threads): those running take the
    blocks of those not yet started, which then find none -- the same results, no spin given up.
    A wait can still outlast its bound where the OS puts one thread aside (a loaded machine: the
    give-up is counted and the run proves nothing), so up to three runs; the first without a
    give-up must equal the engine's step."""
    _binds_16(engine)
    for _ in range(3):
        r = engine.run(RUN, folder=str(FIX / name), fmt=fmt, ids=IDS, groups=groups)
        if r["fails"] == 0:
            check_persist(r)
            return
    pytest.skip(f"a wait gave up in each of three runs at {groups} workgroups (a loaded host)")


def test_static_blocks_at_one_workgroup(engine):
    """The bench variant without flags (workgroup g takes block g): the same results where
    every workgroup is resident -- one here."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / "falcon-d40-untied"), fmt="f16", ids=IDS, groups=1,
                   static=True)
    assert r["fails"] == 0
    check_persist(r)


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


@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_narrow_formats_in_one_dispatch(engine, d64, fmt):
    """q8 (a scale a row) and q4 (a scale a group of 32), each scale loaded as its own word,
    against the engine's mat-vecs of the same quantised weights."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(d64), fmt=fmt, ids=IDS, groups=1)
    assert r["fails"] == 0
    check_persist(r)


@pytest.fixture(scope="module")
def d160(tmp_path_factory):
    """A random Mamba-1 of d_model 160 (inner 320, dt rank 10): in_proj's 640 rows are three
    sub-blocks of a workgroup's rows at 16 threads a row (256, 256, 128: the last one partial),
    out_proj's 160 one partial one, x_proj's 42 rows one a pass."""
    from tools.cmd_bench import _write_random_model
    folder = tmp_path_factory.mktemp("d160")
    _write_random_model(str(folder), dict(d_model=160, n_layers=2, vocab_size=128))
    return folder


@pytest.mark.parametrize("fmt,groups,ahead,tpr", [("q4", 1, False, None), ("f16", 2, False, None),
                                                  ("f32", 1, True, 16), ("q4", 2, True, None)])
def test_rows_in_several_sub_blocks(engine, d160, fmt, groups, ahead, tpr):
    """More rows a block than a workgroup's threads: each sub-block's addends loaded and its
    sums stored before the next (ops/mamba1_persist's phase geometry, the rule's threads a
    row); and with x_proj's and out_proj's second trips loaded before their waits (AHEAD: at
    16 threads a row in f32 their rows are two trips a thread, else the next pass's first)."""
    _binds_16(engine)
    for _ in range(3):
        r = engine.run(RUN, folder=str(d160), fmt=fmt, ids=IDS, groups=groups, ahead=ahead,
                       tpr=tpr)
        if r["fails"] == 0:
            check_persist(r)
            return
    pytest.skip(f"a wait gave up in each of three runs at {groups} workgroups (a loaded host)")


@pytest.mark.parametrize("count,written_out", [(False, None), (True, False)])
def test_other_waits(engine, count, written_out):
    """MAMBAWEB_PERSIST_COUNT=0: no thread waits for a phase's count, each spins on the words it
    stages; MAMBAWEB_PERSIST_WRITTEN_OUT=0: the count polled a load a loop pass (a GPU's rule)
    -- the same results (one workgroup: its own words, written before it reads them)."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / "falcon-d40-untied"), fmt="f16", ids=IDS, groups=1,
                   count=count, written_out=written_out)
    assert r["fails"] == 0
    check_persist(r)


def test_the_phase_ablation_stops_after_the_scan(engine):
    """MAMBAWEB_PERSIST_LAST=2 (a bench ablation) runs norm + in_proj + conv, x_proj and the scan
    and no out_proj: the first layer's conv and SSM states (its input is the embedding alone)
    are the engine's, the logits are not (no layer adds to the residual)."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / "mamba-d40-tied"), fmt="f32", ids=IDS, groups=1, last=2)
    assert r["fails"] == 0
    close(r["plain_conv"][0], r["persist_conv"][0])
    close(r["plain_ssm"][0], r["persist_ssm"][0])
    a, b = (np.frombuffer(r[k], np.float32) for k in ("plain", "persist"))
    assert np.abs(a - b).max() > 0.1


def test_mixed_formats_keep_the_engine_path(engine):
    """d_model 40 in q8: in_proj's 40 inputs are no whole chunk of 16 (it stays f32), x_proj's
    and out_proj's 80 are (q8): one format is needed."""
    _binds_16(engine)
    r = engine.run(RUN, folder=str(FIX / "mamba-d40-tied"), fmt="q8", ids=IDS[:3], groups=2)
    assert r["persist_why"] == "weight formats"
    assert r["persist"] == r["plain"] and r["persist_dpt"] == r["plain_dpt"]
