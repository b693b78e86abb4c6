"""Mamba-3 MIMO decoding with everything between in_proj and out_proj in one dispatch
(ops/mamba3_mimo_step.py, shaders/mamba3_step_mimo.wgsl) against the separate kernels (B's and
C's norms, mamba3_prep, mamba3_step, mamba3_mimo_out; `device.mamba3_mimo_fused = False`): the
same logits (one sequence and two; y_r's sums over N meet in a lane tree, so within rounding)
and greedy tokens, in both forms: a head a workgroup (four dispatches fewer a layer) and 8 rows
a workgroup (four fewer; three with the out-projection norm, whose mamba3_mimo_out still runs).
The real-GPU kernels forced on the native backend (lavapipe here)."""
import pytest

from tests.browser.decode_fold_cases import MIMO_FORMS as FORMS, check_fold, mimo_fewer as fewer
from tests.conftest import REPO
from tests.native_support import engine, random_model, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name,fmt", [("mamba3-mimo-r2-g1-r05-tied", "f32"),
                                      ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f32"),
                                      ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f16")])
def test_fixtures_decode_the_same_in_one_step_dispatch(engine, name, fmt, form):
    r = check_fold(engine, FIX / name, fmt, "mamba3_mimo_fused", fewer(FIX / name, form),
                   reset=None, pin=FORMS[form])
    assert len(r["fold_tokens"]) > 1


@pytest.fixture(scope="module")
def mimo_heads(tmp_path_factory):
    """mamba3-187m MIMO's heads (d_state 128, head_dim 64, rank 4, half the state rotated) at
    d_model 64: two heads, here in two groups, with the out-projection norm."""
    return random_model(tmp_path_factory, "m3mimo", "mamba3", is_mimo=True, mimo_rank=4,
                        state_size=128, head_dim=64, n_groups=2, is_outproj_norm=True)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("fmt", ["f32", "q4"])
def test_real_heads_decode_the_same_in_one_step_dispatch(engine, mimo_heads, fmt, form):
    check_fold(engine, mimo_heads, fmt, "mamba3_mimo_fused", fewer(mimo_heads, form),
               reset=None, pin=FORMS[form])


@pytest.mark.parametrize("form", sorted(FORMS))
def test_rank_8_and_long_rows_decode_the_same(engine, tmp_path_factory, form):
    """The largest rank (the per-rank arrays' size), without the out-projection norm, and a
    state of 160 (past the 4 a lane the rows form loads before its prologue)."""
    folder = random_model(tmp_path_factory, "m3mimo8", "mamba3", is_mimo=True, mimo_rank=8,
                          state_size=160, head_dim=32)
    check_fold(engine, folder, "f32", "mamba3_mimo_fused", fewer(folder, form), reset=None,
               pin=FORMS[form])
