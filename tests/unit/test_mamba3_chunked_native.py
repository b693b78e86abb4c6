"""The Mamba-3 chunked-scan checks of tests/browser/test_kernels_mamba3.py (chunked == serial ==
the float64 reference) on the native backend (wgpu-py, the same WGSL). Skips, saying why, only
without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser import test_kernels_mamba3 as K
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


test_mamba3_chunked_equals_serial = K.test_mamba3_chunked_equals_serial
test_mamba3_mimo_chunked_equals_serial = K.test_mamba3_mimo_chunked_equals_serial
