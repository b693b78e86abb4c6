"""Mamba-3's SISO decode step with 32 threads per state row (mamba3_step_lanes in
shaders/mamba3_step.wgsl, what real GPUs run; py_engine/ops/mamba3.step_lanes) on the native
backend (lavapipe here), forced with `device.mamba3_step_lanes`: the Mamba-3 kernel suite
(unrolled steps == the forward == float64; P not a multiple of the 8 rows a pass, N from 8 to
128, groups, rope fractions, Cols views, Bsz 2) through it; whole Mamba-3 models decode the same
logits (y's sums meet in another order: 1e-5) and greedy tokens with it as with the
thread-per-row step, SISO with B's and C's RMSNorms folded into it (two dispatches fewer per
layer; MIMO keeps its kernel and its norms), and the reference logits stored with a fixture;
and the choice itself."""
import pytest

import py_engine.ops.mamba3 as m3
from tests.browser import test_kernels_mamba3 as KM3
from tests.browser.decode_fold_cases import check_fold
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture
def forced(engine):
    engine.device.mamba3_step_lanes = True
    yield engine
    engine.device.mamba3_step_lanes = None


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols", KM3.CASES)
def test_kernel_suite_steps_with_lanes(forced, nb, T, H, P, G, N, rf, heavy, with_state, cols):
    KM3.test_mamba3_forward_step_reference(forced, nb, T, H, P, G, N, rf, heavy, with_state, cols)


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus",
                                  "mamba3-g2-r10-untied-onorm", "mamba3-mimo-r2-g1-r05-tied"])
def test_models_decode_the_same_with_lanes(engine, name):
    """SISO: the lanes step with B's and C's norms folded in, two dispatches fewer per layer;
    MIMO: unchanged."""
    import json
    cfg = json.loads((FIX / name / "config.json").read_text())
    fewer = 0 if (cfg.get("ssm_cfg") or {}).get("is_mimo") else 2 * cfg["n_layer"]
    r = check_fold(engine, FIX / name, "f32", "mamba3_step_lanes", fewer,
                   ids=[1, 5, 9, 2, 7, 3], reset=None)
    assert len(r["fold_tokens"]) > 1


def test_lanes_step_matches_transformers_reference(engine):
    """Step by step through the lanes step with the folded norms: the fixture's reference
    logits (state-spaces' Mamba-3 reference, stored with it)."""
    import numpy as np
    from tests.browser.decode_fold_cases import RUN
    folder = FIX / "mamba3-g1-r05-tied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None,
                   flag="mamba3_step_lanes", reset=None)
    got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
    assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4


class _Dev:
    def __init__(self, fallback=False, forced=None, storage=16):
        self.features, self.info = {"subgroups"}, {"is_fallback": fallback}
        self.limits = {"maxStorageBuffersPerShaderStage": storage}
        if forced is not None:
            self.mamba3_step_lanes = forced


def test_the_choice(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_MAMBA3_STEP", raising=False)
    assert m3.step_lanes(_Dev())
    assert not m3.step_lanes(_Dev(fallback=True))
    assert m3.step_lanes(_Dev(fallback=True, forced=True))
    assert not m3.step_lanes(_Dev(storage=10, forced=True))    # 11 storage bindings needed
    assert m3.step_folds_bc_norm(_Dev(), False, 128)
    assert not m3.step_folds_bc_norm(_Dev(), True, 128)         # MIMO
    assert not m3.step_folds_bc_norm(_Dev(), False, 256)        # a row of B over 256 floats
    monkeypatch.setenv("MAMBAWEB_MAMBA3_STEP", "rows")
    assert not m3.step_lanes(_Dev())
