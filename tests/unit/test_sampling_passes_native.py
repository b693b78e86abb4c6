"""sampling_sample (shaders/sampling.wgsl) with top-k walks, after finding the threshold, only
each thread's list of the values at or above it (KEEP_LISTS, py_engine/ops/sampling.keep_lists)
instead of the whole row in its top-p and draw passes: the same ids as walking the row, draw
after draw, with and without a repetition penalty and top-p, through ties at the threshold
(kept, as HF keeps them), a NaN logit, and a k too large for the lists (every pass walks the
row then); one row and two. Native backend (lavapipe here). The row's values are loaded eight
at a time in both forms, visited in the same order as one at a time (the same sums)."""
import pytest

from tests.browser.sampling_passes_cases import (SETTINGS, SPREAD_SETTINGS, TOPP_SETTINGS,
                                               check_kept_lists, check_topp_alone,
                                               check_passes, check_passes_edges, PASSES_SETTINGS,
                                               check_penalty, check_spread, setting_name)
from tests.native_support import engine, native as pytestmark  # noqa: F401


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: f"k{kw['top_k']}")
@pytest.mark.parametrize("V,rows", [(5000, 2), (50280, 1)])
def test_kept_lists_draw_what_the_whole_row_draws(engine, kw, V, rows):
    check_kept_lists(engine, kw, V, rows)


# every spread setting at every shape where its k is a top-k (k = 2,000 is past V = 1,000)
SPREAD_CASES = [pytest.param(kw, V, rows, id=f"{V}-{rows}-{setting_name(kw)}")
                for V, rows in [(1000, 2), (5000, 2), (50280, 1)]     # 32 and 128 threads
                for kw in SPREAD_SETTINGS if kw["top_k"] < V]


@pytest.mark.parametrize("kw,V,rows", SPREAD_CASES)
def test_spread_candidates_draw_what_the_whole_row_draws(engine, kw, V, rows):
    """Top-k spread over the GPU (sampling_candidates: each slice's values at or above its
    own k-th largest) against one workgroup walking the row: the same ids; a slice whose ties
    overflow its slots sends its row down the whole-row walk."""
    check_spread(engine, kw, V, rows)


@pytest.mark.parametrize("V,rows", [(1000, 2), (50280, 1), (300_000, 1)])
def test_penalty_where_the_row_is_first_read(engine, V, rows):
    """Greedy's slices penalise themselves (300,000 logits: 293 slices, more than its 256
    workgroups) and sampling_penalise writes the penalised row a draw without top-k walks:
    HF's penalty, bit for bit."""
    check_penalty(engine, V, rows)


@pytest.mark.parametrize("kw", TOPP_SETTINGS, ids=lambda kw: f"p{kw['top_p']}")
@pytest.mark.parametrize("V,rows", [(5000, 5), (50280, 3)])
def test_top_p_alone_over_the_candidates_draws_what_the_whole_row_draws(engine, kw, V, rows):
    check_topp_alone(engine, kw, V, rows)


@pytest.mark.parametrize("kw", PASSES_SETTINGS,
                         ids=lambda kw: f"k{kw['top_k']}-p{kw['top_p']}-t{kw['temperature']}")
@pytest.mark.parametrize("V,rows", [(5000, 5), (50280, 3)])
def test_passes_over_the_row_draw_what_one_workgroup_draws(engine, kw, V, rows):
    """Top-p alone, top-k past the candidates' 128 and plain temperature as passes spread
    over the GPU."""
    check_passes(engine, kw, V, rows)


@pytest.mark.parametrize("V", [5000, 50280])
def test_passes_at_the_thresholds_edges(engine, V):
    """Top-k's k-th value tied at the boundary, fewer values than k, top-p 0."""
    check_passes_edges(engine, V)
