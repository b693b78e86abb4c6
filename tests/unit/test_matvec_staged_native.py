"""The decode mat-vec's staging, trip and prefetch variants (STAGE, RPT, TPR, PREFETCH in
shaders/lib/matvec_rows.wgsl) against float64 numpy in every weight format: the whole grid on
the native backend (lavapipe here, the real-GPU kernel forced), where it runs several times
faster than on SwiftShader; tests/browser/test_kernels_weight_format.py keeps one case of each
in the browser (Tint's compile of the same WGSL). tests/browser/matvec_cases.py."""
import pytest

from tests.browser.matvec_cases import check_same_bits, check_staged
from tests.native_support import engine, native as pytestmark  # noqa: F401

FORMATS = ["f16", "bf16", "q8", "q4", "f32"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rpt", [None, 4])
def test_decode_matvec_with_x_staged_in_workgroup_memory(engine, fmt, rpt):
    """The staged mat-vec (weight_format.stage_x), K past one 2,048-input tile."""
    check_staged(engine, fmt, rpt, K=2304, seed=5)


@pytest.mark.parametrize("fmt", ["f16", "q4", "f32"])
@pytest.mark.parametrize("rpt,stage", [(1, True), (4, True), (2, False)])
def test_decode_matvec_walks_several_trips(engine, fmt, rpt, stage):
    """16 threads per row: each thread sums several trips of four loads, several tiles when
    staged; partial trips at the tile's and the row's end."""
    check_staged(engine, fmt, rpt, K=2304, seed=9, rows=(37, 8, 19), tpr=16, stage=stage)


@pytest.mark.parametrize("prefetch", [1, 2, 3])
@pytest.mark.parametrize("fmt,rpt,stage", [("q4", 1, True), ("f16", 2, False)])
def test_decode_matvec_prefetch_levels(engine, prefetch, fmt, rpt, stage):
    """The prefetch levels (the default is 3; the others bench variants) walk the same trips:
    the first trip ahead (1), the next trip while summing one (2), only the store's addends
    ahead (3)."""
    check_staged(engine, fmt, rpt, K=2304, seed=9, rows=(37, 8, 19), tpr=16, stage=stage,
                 prefetch=prefetch)


@pytest.mark.parametrize("fmt", ["f16", "q4", "f32"])
@pytest.mark.parametrize("rpt,tpr,stage,K", [
    (1, 16, True, 2304),    # 18 f16 chunks a thread: four trips and two left; two tiles
    (1, 32, True, 768),     # the 130m in_proj: three chunks a thread (f16), none in a trip
    (2, 64, False, 1536),   # unstaged, two rows a thread, a ragged last chunk; the prologue
    (1, 256, False, 4096),  # x_proj-like: a row per workgroup, two chunks a thread (f16)
    (1, 128, False, 8192)])  # the prologue's x: eight vec4s a thread, two passes of four
def test_decode_matvec_last_chunks_as_one_trip(engine, fmt, rpt, tpr, stage, K):
    """TAIL (the default): the walk's last chunks as one trip, the prologue's x loads four at a
    time -- the same bits as one load a pass."""
    check_same_bits(engine, fmt, rpt, tpr, stage, K, "tail", False, True)



@pytest.mark.parametrize("rpt,tpr,stage,K", [(1, 16, True, 2304), (2, 64, False, 1536),
                                             (4, 32, True, 768), (1, 256, False, 4096)])
def test_q4_scales_loaded_as_words(engine, rpt, tpr, stage, K):
    """SCALE_WORD (shaders/matvec_q4.wgsl): each group scale loaded as its own word, not as
    the vec4 holding it -- the same scales, the same bits, for both matrices of a call."""
    check_same_bits(engine, "q4", rpt, tpr, stage, K, "scale_word", False, True)
