"""The Mamba-3 scan-backward and MIMO-output-backward kernel tests of
tests/browser/test_kernels_mamba3_backward.py on the native backend (wgpu-py, the same WGSL).
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser import test_kernels_mamba3_backward as K
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


test_mamba3_backward_vs_torch = K.test_mamba3_backward_vs_torch
test_mamba3_mimo_backward_vs_torch = K.test_mamba3_mimo_backward_vs_torch
test_mamba3_mimo_out_backward_vs_torch = K.test_mamba3_mimo_out_backward_vs_torch
test_mamba3_backward_checkpoint_intervals = K.test_mamba3_backward_checkpoint_intervals
