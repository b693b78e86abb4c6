"""The K = 4 causal conv (conv1d_forward4 in shaders/conv1d_forward.wgsl: four tokens a thread,
their seven inputs loaded together) on the native backend (wgpu-py on lavapipe here): bit for
bit the tap-by-tap kernel's outputs and final state (the same sum in the same order), and the
float64 reference's, at lengths that leave a partial group of four, a prompt shorter than the
taps (the state zero-padded), a continued sequence (state in), batches and a column view of
[x | z] as in_proj writes it. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.native_support import engine, native as pytestmark  # noqa: F401
from tests.reference import conv1d_numpy as conv_ref
from tests.reference import elementwise_numpy as ew_ref

gpu = runner("import py_engine.ops.conv1d as conv")

CODE = """
I, T1, T2, nb, silu = args
ran, run0 = [], b.run
b.run = lambda shader, entry, *a, **k: (ran.append(entry), run0(shader, entry, *a, **k))[1]
for four in (True, False):
    dev.conv4 = four
    x1 = Cols(T['xz1'], 0, I, (nb, T1, I))
    y1, st = conv.conv1d_forward(b, x1, T['w'], T['bias'], silu=silu, write_state=True)
    y2, st2 = conv.conv1d_forward(b, T['x2'], T['w'], T['bias'], silu=silu, state_in=st,
                                  write_state=True)
    k = int(four)
    outs.update({f'y1_{k}': y1, f'st_{k}': st, f'y2_{k}': y2, f'st2_{k}': st2})
    info[f'entries{k}'] = sorted(set(ran))
    ran.clear()
dev.conv4, b.run = None, run0
"""


@pytest.mark.parametrize("nb,T1,T2,I,silu", [(1, 37, 6, 70, True), (2, 2, 9, 64, False),
                                             (3, 8, 1, 130, True), (1, 1, 4, 40, True)])
def test_four_tokens_a_thread_equal_the_tap_by_tap_kernel(engine, nb, T1, T2, I, silu):
    rng = np.random.default_rng(nb * 1000 + T1)
    xz = rng.standard_normal((nb, T1 + T2, 2 * I)).astype(np.float32)
    w = (rng.standard_normal((I, 4)) * 0.5).astype(np.float32)
    bias = rng.standard_normal(I).astype(np.float32)
    x = xz[..., :I]
    code = CODE.replace("args", repr((I, T1, T2, nb, silu)))
    o, info = gpu(engine, code, xz1=np.ascontiguousarray(xz[:, :T1]).reshape(nb * T1, 2 * I),
                  x2=np.ascontiguousarray(x[:, T1:]), w=w, bias=bias)
    assert info["entries1"] == ["conv1d_forward4"], info
    assert info["entries0"] == ["conv1d_forward"], info
    for name in ("y1", "st", "y2", "st2"):
        assert np.array_equal(o[f"{name}_1"], o[f"{name}_0"]), name
    act = ew_ref.silu if silu else (lambda v: v)
    X = d64(x)
    ref = act(conv_ref.causal_conv1d(X, d64(w), d64(bias)))
    assert rel_err(o["y1_1"], ref[:, :T1]) <= 1e-5
    assert rel_err(o["y2_1"], ref[:, T1:]) <= 1e-5
    assert rel_err(o["st_1"], conv_ref.conv_state_from_inputs(X[:, :T1], 4)) == 0.0
    assert rel_err(o["st2_1"], conv_ref.conv_state_from_inputs(X, 4)) == 0.0
