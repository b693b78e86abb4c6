"""Mamba-2's gated, grouped RMSNorm (py_engine/ops/gated_rmsnorm.py) in headless Chromium's
WebGPU, against float64 torch autograd of transformers' Mamba2RMSNormGated math
(norm_before_gate=False): v = y * silu(z), RMS-normalised per group of I/G channels, times w.

Tolerances: relative error (to max |reference|) <= 1e-5 forward, <= 1e-4 gradients. Shapes are
tiny (SwiftShader is a CPU): I not a multiple of 64, group sizes below and above the 64-thread
workgroup, M = 1, 37 and 130 (more than one 64-row dw chunk, so the reduce pass runs).
"""
import numpy as np
import pytest
import torch

from tests.browser.kernel_harness import rel_err, runner

pytestmark = pytest.mark.browser

gpu = runner("import py_engine.ops.gated_rmsnorm as gn")

rng = np.random.default_rng(4321)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def reference(y, z, w, dout, group_size, eps):
    """float64 torch autograd: (out, rstd [M, G], dy, dz, dw)."""
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)  # noqa: E731
    y64, z64, w64 = t(y), t(z), t(w)
    M, I = y64.shape
    v = (y64 * torch.nn.functional.silu(z64)).view(M, I // group_size, group_size)
    rstd = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    out = (v * rstd).view(M, I) * w64
    out.backward(torch.tensor(np.asarray(dout, dtype=np.float64)))
    n = lambda a: a.detach().numpy()  # noqa: E731
    return n(out), n(rstd)[..., 0], n(y64.grad), n(z64.grad), n(w64.grad)


def test_reference_is_transformers_math():
    """The float64 reference above is transformers' Mamba-2 gated norm (run in its f32)."""
    try:        # transformers >= 5.25 renamed it (same module, same code)
        from transformers.models.mamba2.modeling_mamba2 import Mamba2RMSNormGated as Gated
    except ImportError:
        from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated as Gated
    y, z, w = f32(7, 24), f32(7, 24, scale=3.0), f32(24)
    norm = Gated(24, group_size=12, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(w))
        hf = norm(torch.from_numpy(y), gate=torch.from_numpy(z)).numpy()
    ours = reference(y, z, w, np.zeros((7, 24)), 12, 1e-5)[0]
    assert rel_err(hf, ours) <= 1e-6


CASES = [  # M, I, G, z as a Cols view of in_proj's output, shape [Bsz, T, I] instead of [M, I]
    (1, 40, 1, True, False),
    (37, 40, 2, True, False),
    (37, 24, 2, False, False),
    (1, 24, 4, True, False),
    (15, 40, 4, True, True),     # [3, 5, 40]
    (3, 200, 2, True, False),    # group of 100 > the 64-thread workgroup
    (130, 24, 2, True, False),   # 3 dw chunks: partials + reduce
]


@pytest.mark.parametrize("M,I,G,zcols,three_d", CASES)
def test_gated_rmsnorm(engine, M, I, G, zcols, three_d):
    S, eps, R = I // G, 1e-5, 5
    W = 2 * I + R          # in_proj-like output [z | x | dt]: z is columns 0..I
    proj = f32(M, W, scale=2.0)
    proj[0, :3] = [30.0, -30.0, 25.0]   # both branches of the stable sigmoid, and its tails
    y, w, dout = f32(M, I), f32(I) + 1.0, f32(M, I)
    dw0 = f32(I)
    z = proj[:, :I]
    shape = (3, M // 3, I) if three_d else (M, I)
    zarg = f"Cols(T['proj'], 0, {I}, {shape})" if zcols else "T['z']"
    code = f"""
I, S, G, shape = {I}, {S}, {G}, {shape}
y = T['y'].view(shape)
z = {zarg}
dout = T['dout'].view(shape)
out, rstd = gn.gated_rmsnorm_forward(b, y, z, T['w'], group_size=S, eps={eps})
info['fwd_dispatches'] = b.dispatch_count
n0 = b.dispatch_count
dproj = Tensor.from_bytes(dev, ({M}, {W}), bytes({M} * {W} * 4))
dy, dz, dw = gn.gated_rmsnorm_backward(b, dout, y, z, T['w'], rstd, group_size=S, eps={eps},
                                       dz=Cols(dproj, 0, I, shape))
info['bwd_dispatches'] = b.dispatch_count - n0
b.submit()
first = [await dy.to_bytes(), await dw.to_bytes()]
# again, dz into a plain tensor and accumulating into a given dw
dy2, dz2, dw2 = gn.gated_rmsnorm_backward(b, dout, y, z, T['w'], rstd, group_size=S, eps={eps},
                                          dw=T['dw0'], accumulate_dw=True)
# and once more as the first call: reruns are bit-identical (fixed-order reductions)
dy3, _, dw3 = gn.gated_rmsnorm_backward(b, dout, y, z, T['w'], rstd, group_size=S, eps={eps})
b.submit()
info['same'] = [await dy2.to_bytes(), await dy3.to_bytes(), await dw3.to_bytes()] == \
    [first[0], first[0], first[1]]
outs.update(out=out, rstd=rstd, dy=dy, dproj=dproj, dw=dw, dz2=dz2, dw2=dw2)
"""
    arrays = dict(y=y, proj=proj, w=w, dout=dout, dw0=dw0)
    if not zcols:
        arrays["z"] = np.ascontiguousarray(z)
    o, info = gpu(engine, code, **arrays)
    r_out, r_rstd, r_dy, r_dz, r_dw = reference(y, z, w, dout, S, eps)
    assert info["fwd_dispatches"] == 1
    assert info["bwd_dispatches"] == (2 if M <= 64 else 3)
    assert info["same"]
    assert rel_err(o["out"], r_out) <= 1e-5
    assert rel_err(o["rstd"], r_rstd) <= 1e-5
    assert rel_err(o["dy"], r_dy) <= 1e-4
    assert rel_err(o["dw"], r_dw) <= 1e-4
    dproj = o["dproj"].reshape(M, W)
    assert rel_err(dproj[:, :I], r_dz) <= 1e-4
    assert np.array_equal(o["dz2"].reshape(M, I), dproj[:, :I])
    assert np.all(dproj[:, I:] == 0)          # only the z window of the gradient was written
    assert rel_err(o["dz2"], r_dz) <= 1e-4
    assert rel_err(o["dw2"], dw0.astype(np.float64) + r_dw) <= 1e-4
