"""Mamba-2's decode step with 32 threads per state row (ssd_step_lanes in shaders/ssd_step.wgsl,
what real GPUs run; py_engine/ops/ssd.step_lanes) on the native backend (lavapipe here), forced
with `device.ssd_step_lanes`: the SSD kernel suite (unrolled steps == the forward == float64,
N from 4 to 128, groups, Cols views, dt clamps, Bsz 2) through it; whole Mamba-2 models and a
NemotronH hybrid decode the same logits (the row sums meet in another order: 1e-5) and greedy
tokens with it as with the thread-per-row step, in as many dispatches; and the choice itself."""
import pytest

import py_engine.ops.ssd as ssd
from tests.browser import test_kernels_ssd as KS
from tests.browser.decode_fold_cases import check_fold
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture
def forced(engine):
    engine.device.ssd_step_lanes = True
    yield engine
    engine.device.ssd_step_lanes = None


@pytest.mark.parametrize("nb,T,H,P,G,N,L,with_h0,inplace,cols,dt_lim", KS.FWD_CASES)
def test_kernel_suite_steps_with_lanes(forced, nb, T, H, P, G, N, L, with_h0, inplace, cols,
                                       dt_lim):
    KS.test_ssd_forward_step_reference(forced, nb, T, H, P, G, N, L, with_h0, inplace, cols,
                                       dt_lim, False)


@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied", "nemotronh-mamf-untied"])
def test_models_decode_the_same_with_lanes(engine, name):
    r = check_fold(engine, FIX / name, "f32", "ssd_step_lanes", 0, reset=None)
    assert len(r["fold_tokens"]) > 1


class _Dev:
    def __init__(self, features=("subgroups",), fallback=False, forced=None):
        self.features, self.info = set(features), {"is_fallback": fallback}
        if forced is not None:
            self.ssd_step_lanes = forced


def test_the_choice(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_SSD_STEP", raising=False)
    assert ssd.step_lanes(_Dev())                                  # a real GPU
    assert not ssd.step_lanes(_Dev(fallback=True))                 # SwiftShader
    assert not ssd.step_lanes(_Dev(features=()))
    assert ssd.step_lanes(_Dev(fallback=True, forced=True))        # tests
    assert not ssd.step_lanes(_Dev(forced=False))
    monkeypatch.setenv("MAMBAWEB_SSD_STEP", "rows")
    assert not ssd.step_lanes(_Dev())
    monkeypatch.setenv("MAMBAWEB_SSD_STEP", "lanes")
    assert ssd.step_lanes(_Dev(fallback=True))
