"""tests/browser/test_mamba3_training.py's whole-LM gradient check on the native backend (wgpu-py,
the same WGSL), for every Mamba-3 fixture: SISO with and without is_outproj_norm, MIMO of rank 2
and 4. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser import test_mamba3_training as M

from tests.native_support import engine, native as pytestmark  # noqa: E402,F401


@pytest.mark.parametrize("name", M.NAMES)
def test_gradients_match_torch_autograd(engine, name):
    M.check_gradients(engine, str(M.FIX / name), name)
