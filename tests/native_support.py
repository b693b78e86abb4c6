"""What every native-backend test module shares: skip (saying why) without a Vulkan/Metal/D3D12
adapter, and one NativeEngine (wgpu-py) per module.

    from tests.native_support import engine, native as pytestmark  # noqa: F401
"""
import pytest

from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
native = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()
