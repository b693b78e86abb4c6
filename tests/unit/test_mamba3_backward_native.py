"""The Mamba-3 scan-backward and MIMO-output-backward kernel tests of
tests/browser/test_kernels_mamba3_backward.py on the native backend (wgpu-py, the same WGSL).
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""

from tests.browser import test_kernels_mamba3_backward as K

from tests.native_support import engine, native as pytestmark  # noqa: E402,F401


test_mamba3_backward_vs_torch = K.test_mamba3_backward_vs_torch
test_mamba3_mimo_backward_vs_torch = K.test_mamba3_mimo_backward_vs_torch
test_mamba3_mimo_out_backward_vs_torch = K.test_mamba3_mimo_out_backward_vs_torch
test_mamba3_backward_checkpoint_intervals = K.test_mamba3_backward_checkpoint_intervals
