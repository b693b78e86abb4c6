"""The decode's counters (step, repetition history, positions: decode_control.wgsl's work)
advanced inside the sampler's last dispatch (shaders/sampling.wgsl ADVANCE,
py_engine/ops/sampling.fold_control) against their own dispatch, on the native backend
(lavapipe here): for each sampling mode -- greedy, greedy with a repetition penalty, a seeded
top-k/top-p draw with and without one -- a stream stopped inside a group and the conversation
continued after it give the same ids, leave the same counters, history and positions, with one
dispatch fewer a token; Mamba-1 and Mamba-2 (the Generator serves every family). Two rows
sampled directly: greedy and a draw as passes over the row fold and write what the separate
dispatch writes; a random draw of two rows in sampling_sample keeps its own dispatch (one row's
workgroup could move the step counter while the other still draws)."""
import pytest

from tests.browser.control_fold_cases import MODES, check_rows, check_streams
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", ["mamba-d40-tied", "mamba2-g2-untied"])
def test_counters_in_the_sampler_equal_their_own_dispatch(engine, name, mode):
    check_streams(engine, FIX / name, mode)


@pytest.mark.parametrize("mode", ["greedy", "draw", "passes", "passes_temp"])
def test_two_rows(engine, mode):
    check_rows(engine, mode)
