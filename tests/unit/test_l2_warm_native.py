"""L2 warming (py_engine/ops/l2_warm.py, shaders/lib/l2_warm.wgsl) on the native backend
(lavapipe here, the real-GPU decode kernels forced): Mamba-1 and Falcon-Mamba decode the same
bits with warming on as off, in f32, f16 and q4, with x_proj a dispatch of its own and folded
into in_proj; and the plan's text and the ranges it binds."""
import pytest

from tests.browser.l2_warm_cases import check_warm
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


def _binds(engine, n):
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < n:
        pytest.skip(f"this adapter binds fewer than {n} storage buffers per stage")


@pytest.mark.parametrize("fmt", ["f32", "f16", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied"])
def test_warming_changes_no_bit(engine, name, fmt):
    _binds(engine, 14)
    check_warm(engine, FIX / name, fmt, xproj=False)


def test_warming_with_x_proj_folded(engine):
    _binds(engine, 14)
    check_warm(engine, FIX / "mamba-d40-tied", "f16", xproj=True, plan="s:out;o:in")
