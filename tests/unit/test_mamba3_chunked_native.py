"""The Mamba-3 chunked-scan checks of tests/browser/test_kernels_mamba3.py (chunked == serial ==
the float64 reference) on the native backend (wgpu-py, the same WGSL). Skips, saying why, only
without any Vulkan/Metal/D3D12 adapter."""

from tests.browser import test_kernels_mamba3 as K

from tests.native_support import engine, native as pytestmark  # noqa: E402,F401


test_mamba3_chunked_equals_serial = K.test_mamba3_chunked_equals_serial
test_mamba3_mimo_chunked_equals_serial = K.test_mamba3_mimo_chunked_equals_serial
