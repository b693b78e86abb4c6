"""A checkpoint may bias only some of the row blocks a layer multiplies together (Mamba-1's
in_proj halves, Mamba-2's z | xBC | dt blocks, attention's q | k | v). Forward then multiplies
each block with its own bias, and so must decode: its one-dispatch paths (linear_multi, the
conv step folded into in_proj) take no biases, and each used to ask only one block's bias
(in_x_b / in_z_b, in_z_b, bq), dropping the others' -- and Mamba-1's fold took in_x_b and got
it wrong. Here one block gets a bias after loading: the step logits move, and with the real-GPU
decode kernels forced (`device.force_matvec`) equal the plain dispatches' and, for the Mamba layers,
the forward's. Native backend (lavapipe here); skips, saying why, only without any
Vulkan/Metal/D3D12 adapter."""
import numpy as np
import pytest

from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"

CODE = """
from py_engine.gpu.tensor import Tensor
from py_engine.io.hf_loader import load_model_local
m = await load_model_local(device, args['folder'])
p = next(i for i, kind in enumerate(m.cfg.layers) if kind == args['kind'])
mixer = m.mixers[p]
n = getattr(mixer, args['weight']).shape[0]
assert getattr(mixer, args['bias']) is None
result = {}
st = m.new_state(max_tokens=16)
result['step_unbiased'] = await m.step_logits(args['ids'], st)
st.release()
setattr(mixer, args['bias'],
        Tensor.from_list(device, (n,), [0.5 * (i % 7 - 3) for i in range(n)], 'f32'))
st = m.new_state(max_tokens=16)
result['full'] = await m.logits(args['ids'], st)
st.release()
for force in (None, True):
    device.force_matvec = force
    try:
        st = m.new_state(max_tokens=16)
        result['step_forced' if force else 'step'] = await m.step_logits(args['ids'], st)
        st.release()
    finally:
        device.force_matvec = None
m.release()
"""


@pytest.mark.parametrize("name,kind,weight,bias", [
    ("mamba-d40-tied", "mamba1", "in_x", "in_x_b"),
    ("mamba-d40-tied", "mamba1", "in_z", "in_z_b"),
    ("mamba2-g1-tied", "mamba2", "in_xbc", "in_xbc_b"),
    ("mamba2-g1-tied", "mamba2", "in_dt", "in_dt_b"),
    ("nemotronh-mamf-tied", "attention", "wv", "bv"),     # (a k bias cancels in softmax)
])
def test_decode_takes_every_blocks_bias(engine, name, kind, weight, bias):
    ids = [1, 5, 9, 2, 7]
    out = engine.run(CODE, folder=str(FIX / name), kind=kind, weight=weight, bias=bias, ids=ids)
    got = {k: np.frombuffer(v, dtype=np.float32).reshape(len(ids), -1) for k, v in out.items()}
    scale = np.abs(got["step"]).max()
    assert np.abs(got["step"] - got["step_unbiased"]).max() > 1e-2 * scale, "bias dropped"
    assert np.abs(got["step_forced"] - got["step"]).max() <= 1e-5 * scale, name
    if kind != "attention":   # transformers. NemotronH forward and step differ (expected.npz)
        assert np.abs(got["full"] - got["step"]).max() <= 1e-5 * scale, name
