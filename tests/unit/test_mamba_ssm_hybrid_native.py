"""The mamba_ssm hybrid checks of tests/browser/test_mamba_ssm_hybrid_browser.py on the native backend
(wgpu-py, the same WGSL): logits / states / greedy against the float64 reference, and training
gradients against torch autograd. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser import test_mamba_ssm_hybrid_browser as H

from tests.native_support import engine, native as pytestmark  # noqa: E402,F401


@pytest.mark.parametrize("name", H.NAMES)
def test_logits_states_and_greedy_match_reference(engine, name):
    H.check_logits_states_and_greedy(engine, str(H.FIX / name), name)


@pytest.mark.parametrize("name", H.NAMES)
def test_gradients_match_torch_autograd(engine, name):
    H.check_gradients(engine, str(H.FIX / name), name)
