"""The mamba_ssm hybrid checks of tests/browser/test_mamba_ssm_hybrid_browser.py on the native backend
(wgpu-py, the same WGSL): logits / states / greedy against the float64 reference, and training
gradients against torch autograd. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser import test_mamba_ssm_hybrid_browser as H
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


@pytest.mark.parametrize("name", H.NAMES)
def test_logits_states_and_greedy_match_reference(engine, name):
    H.check_logits_states_and_greedy(engine, str(H.FIX / name), name)


@pytest.mark.parametrize("name", H.NAMES)
def test_gradients_match_torch_autograd(engine, name):
    H.check_gradients(engine, str(H.FIX / name), name)
