"""Row blocks packed side by side (py_engine/ops/weight_pack.py) in one decode mat-vec dispatch
(matvec_forward_pieces) against three to a dispatch and float64, on the native backend (lavapipe
here, the real-GPU kernel forced): tests/browser/matvec_pieces_cases.py."""
import pytest

from tests.browser.matvec_pieces_cases import check_pieces
from tests.native_support import engine, native as pytestmark  # noqa: F401


@pytest.mark.parametrize("fmt", ["f32", "f16", "bf16", "q8", "q4"])
def test_packed_blocks_in_one_dispatch_match_three_at_a_time(engine, fmt):
    """Pinned choices (16 threads a row, so z and x take several workgroups each, one row a
    thread, unstaged): the same sums in the same order as linear_multi's, bit for bit."""
    check_pieces(engine, fmt, tpr=16, rpt=1, stage=False)


@pytest.mark.parametrize("fmt,knobs", [
    ("q4", dict(tpr=16, rpt=2, stage=True)),     # two rows a thread, x staged (M = 1)
    ("f16", dict(tpr=64, rpt=1, stage=True)),    # a workgroup spans pieces' worth of rows
    ("f32", dict(tpr=32, rpt=4, stage=False))])
def test_packed_blocks_under_other_choices(engine, fmt, knobs):
    check_pieces(engine, fmt, **knobs)


@pytest.mark.parametrize("fmt", ["f16", "q4"])
def test_packed_blocks_by_rule_with_staged_tiles(engine, fmt):
    """The engine's own choices, K past one 2,048-input tile of staged x: float64's values."""
    check_pieces(engine, fmt, K=2304, rows=(70, 70, 16, 16, 4, 4, 4, 6), seed=3,
                 same_bits=False)
