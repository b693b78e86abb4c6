"""The decode mat-vec's reductions through subgroup shuffles below the subgroup size (SG in
shaders/lib/matvec_rows.wgsl, weight_format.subgroup_tree) equal the workgroup-memory tree bit
for bit, for threads per row below, at and above this adapter's subgroup size: native backend
(lavapipe here), the real-GPU kernel forced; tests/browser/matvec_cases.py."""
import pytest

from tests.browser.matvec_cases import check_subgroup_tree
from tests.native_support import engine, native as pytestmark  # noqa: F401


@pytest.mark.parametrize("tpr,stage", [(16, True), (64, None), (256, False)])
@pytest.mark.parametrize("fmt", ["f32", "f16", "q4"])
def test_subgroup_tree_equals_the_workgroup_tree(engine, fmt, tpr, stage):
    """And the squares summed in the staging (NORM_IN_STAGE) to rounding; x staged or not."""
    check_subgroup_tree(engine, fmt, tpr, stage=stage)
