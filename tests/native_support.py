"""What every native-backend test module shares: skip (saying why) without a Vulkan/Metal/D3D12
adapter, and one NativeEngine (wgpu-py) per module.

    from tests.native_support import engine, native as pytestmark  # noqa: F401
"""
from contextlib import contextmanager

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


def spread_parameters(folder, seed=0):
    """Give a random_model's per-head and per-rank parameters (biases, D, MIMO's mimo_x/z/o,
    the norms' weights) random values in place: the reference init makes them constant (zero
    biases, unit weights), under which a kernel indexing the wrong head or rank reads the same
    value and passes."""
    import torch
    from pathlib import Path
    from safetensors.torch import load_file, save_file
    path = Path(folder) / "model.safetensors"
    tensors = load_file(str(path))
    g = torch.Generator().manual_seed(seed)
    ends = ("B_bias", "C_bias", "mixer.D", "mimo_x", "mimo_z", "mimo_o", "norm.weight")
    for name, t in tensors.items():
        if name.endswith(ends):
            r = torch.randn(t.shape, generator=g)
            base = 1.0 if name.endswith(("norm.weight", "mimo_x", "mimo_z", "mimo_o")) else 0.0
            tensors[name] = (base + 0.5 * r).to(t.dtype)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return folder


ENTRIES_SEEN = """
from py_engine.gpu import batch as B
if not hasattr(B.Batch, '_mw_plain_run'):
    B.Batch._mw_plain_run = B.Batch.run
    def _run(self, shader, entry, *a, **k):
        B.Batch._mw_seen.add(entry)
        return B.Batch._mw_plain_run(self, shader, entry, *a, **k)
    B.Batch.run = _run
B.Batch._mw_seen = set()
result = None
"""
ENTRIES_PLAIN = """
from py_engine.gpu import batch as B
B.Batch.run = B.Batch._mw_plain_run
del B.Batch._mw_plain_run
result = sorted(B.Batch._mw_seen)
del B.Batch._mw_seen
"""


@contextmanager
def entries_run(engine):
    """The entry points the engine's batches run inside the block: a set, filled as it ends."""
    seen = set()
    engine.run(ENTRIES_SEEN)
    try:
        yield seen
    finally:
        seen.update(engine.run(ENTRIES_PLAIN))
