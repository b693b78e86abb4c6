"""The 16-byte-staged tiled GEMM of x @ W^T (shaders/matmul_tiled_kk.wgsl) on the native backend
(wgpu-py on lavapipe here): bit for bit the scalar-staged kernel's C (shaders/matmul_tiled.wgsl,
the same sums in the same order) and within float64's tolerance, at ragged M and N (rows past them read clamped), split-K slices (the partials summed by
matmul_tiled's reduce), bias, accumulation, and the K windows of lavapipe's loop-pass cap.
Products whose K is not whole 16-deep steps, and devices without room for the staged rows, stay
on the scalar kernel. Skips, saying why, only
without any Vulkan/Metal/D3D12 adapter."""
import numpy as np
import pytest

import py_engine.ops.linear as L

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.native_support import engine, native as pytestmark  # noqa: F401

gpu = runner("import py_engine.ops.linear as L", decode=False)

CODE = """
dev.force_tiled_matmul = True
dev.force_split_k = args_split
L.BIG_TILE_MIN_SIDE = 1
room0, L.KK_BYTES = L.KK_BYTES, args_bytes
ran, run0 = [], b.run
b.run = lambda shader, entry, *a, **k: (ran.append(shader), run0(shader, entry, *a, **k))[1]
acc0 = await T['acc'].to_bytes()
for kk in (True, False):
    dev.tiled_kk = kk
    outs[f'y{int(kk)}'] = L.linear_forward(b, T['x'], T['w'], T['bias'])
    acc = Tensor.from_bytes(dev, T['acc'].shape, acc0, 'f32')
    L.linear_accumulate(b, T['x'], T['w'], acc)
    outs[f'acc{int(kk)}'] = acc
    info[f'shaders{int(kk)}'] = sorted(set(ran))
    ran.clear()
b.run = run0
dev.tiled_kk = None
dev.force_tiled_matmul = None
dev.force_split_k = False
L.BIG_TILE_MIN_SIDE = 65
L.KK_BYTES = room0
"""


def run(engine, M, K, N, split=False, seed=0, room=True):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((M, K)), rng.standard_normal((N, K))
    bias, acc = rng.standard_normal(N), rng.standard_normal((M, N))
    code = CODE.replace("args_split", str(split)).replace(
        "args_bytes", str(L.KK_BYTES if room else 1 << 40))
    outs, info = gpu(engine, code, x=x, w=w, bias=bias, acc=acc)
    got = {k: np.frombuffer(v, dtype=np.float32) for k, v in outs.items()}
    x64, w64 = d64(x.astype(np.float32)), d64(w.astype(np.float32))
    ref = x64 @ w64.T + d64(bias.astype(np.float32))
    return got, info, ref, x64 @ w64.T + d64(acc.astype(np.float32))


@pytest.mark.parametrize("M,K,N", [(128, 64, 128), (130, 112, 129), (3, 48, 200), (257, 80, 131)])
def test_kk_equals_the_scalar_kernel_bit_for_bit(engine, M, K, N):
    got, info, ref, ref_acc = run(engine, M, K, N)
    assert info["shaders1"] == ["matmul_tiled_kk"] and info["shaders0"] == ["matmul_tiled"], info
    assert np.array_equal(got["y1"], got["y0"])
    assert np.array_equal(got["acc1"], got["acc0"])
    assert rel_err(got["y1"].astype(np.float64), ref.ravel()) <= 1e-5
    assert rel_err(got["acc1"].astype(np.float64), ref_acc.ravel()) <= 1e-5


def test_a_device_without_room_for_the_staged_rows_keeps_the_scalar_kernel(engine):
    """Workgroup memory short of KK_BYTES (WebGPU's default 16 KiB): matmul_tiled.wgsl."""
    got, info, ref, _ = run(engine, 130, 112, 129, room=False, seed=3)
    assert info["shaders1"] == ["matmul_tiled"], info
    assert np.array_equal(got["y1"], got["y0"])
    assert rel_err(got["y1"].astype(np.float64), ref.ravel()) <= 1e-5


@pytest.mark.parametrize("M,K,N", [(70, 1024, 20), (130, 608, 140), (70, 1040, 20)])
def test_kk_split_k_slices_equal_the_scalar_kernel(engine, M, K, N):
    """K in slices run side by side: each slice's partials from the kk kernel, summed (with the
    bias, into the old C) by matmul_split_reduce. K 1040 in 4 slices of 272 leaves the last
    one shorter (224)."""
    got, info, ref, ref_acc = run(engine, M, K, N, split=True, seed=4)
    assert info["shaders1"] == ["matmul_tiled", "matmul_tiled_kk"], info   # + the reduce
    assert np.array_equal(got["y1"], got["y0"])
    assert np.array_equal(got["acc1"], got["acc0"])
    assert rel_err(got["y1"].astype(np.float64), ref.ravel()) <= 1e-5


def test_long_k_windows_on_lavapipe(engine):
    """K past lavapipe's loop-pass estimate: K windows, each binding shifted along the rows."""
    got, info, ref, _ = run(engine, 40, 9008, 24, seed=7)
    assert "matmul_tiled_kk" in info["shaders1"], info
    assert np.array_equal(got["y1"], got["y0"])
    assert rel_err(got["y1"].astype(np.float64), ref.ravel()) <= 1e-5


@pytest.mark.parametrize("K", [30, 36])
def test_k_not_whole_steps_keeps_the_scalar_kernel(engine, K):
    got, info, ref, _ = run(engine, 130, K, 129, seed=9)
    assert info["shaders1"] == ["matmul_tiled"], info
    assert rel_err(got["y1"].astype(np.float64), ref.ravel()) <= 1e-5
