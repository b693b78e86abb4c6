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


def random_model(tmp_path_factory, name, family="mamba1", **overrides):
    """A random two-layer model of d_model 64 and 128 tokens (bf16 on disk, as the bench writes
    them: tools/cmd_bench._write_random_model) of `family`, config `overrides` on top: every
    matrix takes q8's and q4's whole chunks."""
    from tools.cmd_bench import _write_random_model
    folder = tmp_path_factory.mktemp(name)
    _write_random_model(str(folder), dict(d_model=64, n_layers=2, vocab_size=128, family=family,
                                          overrides=overrides))
    return folder


@pytest.fixture(scope="module")
def mamba3_d64(tmp_path_factory):
    """A random two-layer Mamba-3 of d_model 64 (random_model)."""
    return random_model(tmp_path_factory, "m3d64", "mamba3")
