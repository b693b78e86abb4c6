"""Warming the L2 with out_proj's weights during Mamba-1's x_proj and scan step changes no
result: tests/browser/l2_warm_cases.py on the native backend (lavapipe), the real-GPU decode
kernels forced."""
import pytest

from tests.browser.l2_warm_cases import check_warm_decode
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.mark.parametrize("name,fmt", [("mamba-d40-tied", "f16"), ("falcon-d40-untied", "q4"),
                                      ("mamba-d40-tied", "f32")])
def test_warming_changes_no_result(engine, name, fmt):
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 13:
        pytest.skip("this adapter binds fewer than 13 storage buffers per stage")
    check_warm_decode(engine, FIX / name, fmt, [1, 5, 9, 2, 7, 3, 11, 4])
