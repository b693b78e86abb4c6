"""Mamba-3's register-tiled chunk kernels (shaders/mamba3_chunk_tiles.wgsl, ops/mamba3_tiles.py)
on the native backend: path "parallel" with the tiles on == the serial scan to 1e-5 and the
float64 reference (tests/browser/test_kernels_mamba3.py's checks), SISO and MIMO, at the chunk
lengths and blocks of dims a device may give them, over several token windows; and the
chunk length and blocks the host picks. Skips, saying why, only without a Vulkan/Metal/D3D12
adapter."""
import types

import pytest

from tests.browser import test_kernels_mamba3 as K

from tests.native_support import engine, native as pytestmark  # noqa: F401


@pytest.mark.parametrize("chunk,block", [(16, None), (8, 1), (4, 3)])
def test_tiled_chunks_equal_the_serial_scan_siso(engine, chunk, block):
    """The real head (P 64, N 128, 32 angles) over 3 chunks and a short one, its K and state
    operands whole or in blocks of one vec4 / dim or three; a small head (P 5, N 12: neither a
    multiple of 4; two groups, two sequences, every dim rotated, the A floor's heavy tail)."""
    with K.tiled(engine, chunk, block):
        K.check_chunked(engine, 1, 3 * chunk + 5, 2, 64, 1, 128, 0.5, False)
        K.check_chunked(engine, 2, 37, 2, 5, 2, 12, 1.0, True)


@pytest.mark.parametrize("nb,T,H,P,G,N,R,rf,heavy,chunk,block", [
    (2, 37, 2, 5, 2, 12, 2, 1.0, True, 16, None),      # L R 32: one workgroup's M tiles
    (1, 23, 4, 3, 1, 8, 3, 0.5, False, 8, 1),          # R 3: M tiles past the diagonal hold terms
    (1, 19, 2, 64, 1, 128, 4, 0.5, True, 4, 5),        # the real head at rank 4
])
def test_tiled_chunks_equal_the_serial_scan_mimo(engine, nb, T, H, P, G, N, R, rf, heavy, chunk,
                                                 block):
    with K.tiled(engine, chunk, block):
        K.test_mamba3_mimo_chunked_equals_serial(engine, nb, T, H, P, G, N, R, rf, heavy)


def test_tiled_chunks_carry_their_states_over_token_windows(engine):
    """Windows of a chunk or two (mamba3_phi's cost a token set high, as if lavapipe's loop limit
    bit early): the angle and ssm states in place, k and v through the copies."""
    old = engine.run("import py_engine.ops.mamba3 as m3\nresult = m3.PHI_PASSES_PER_TOKEN\n"
                     "m3.PHI_PASSES_PER_TOKEN = 2000")
    try:
        with K.tiled(engine, 8):
            K.check_chunked(engine, 2, 37, 2, 5, 2, 12, 1.0, True)
            K.check_chunked(engine, 1, 21, 2, 64, 1, 128, 0.5, False)
            K.test_mamba3_mimo_chunked_equals_serial(engine, 2, 37, 2, 5, 2, 12, 2, 1.0, True)
    finally:
        engine.run(f"import py_engine.ops.mamba3 as m3\nm3.PHI_PASSES_PER_TOKEN = {old}")


def _dev(kib, **attrs):
    return types.SimpleNamespace(limits={"maxComputeWorkgroupStorageSize": kib * 1024},
                                 info={}, **attrs)


def test_tile_chunk_length_and_blocks_follow_the_workgroup_memory(monkeypatch):
    """mamba3-187m's heads (P 64, N 128, 32 angles): 16-token chunks in WebGPU's default 16 KiB
    (K whole, the out kernel's operands in blocks of 21 dims), 32 in an H200's 48 KiB; the
    stated blocks fit; a chunk length set past what fits takes the longest that does; rank 4
    takes 8 tokens (L R 32); on by rule on a real GPU, off on a CPU adapter, the device
    flag or the environment over both."""
    from py_engine.ops import mamba3_tiles as T
    for var in ("MAMBAWEB_MAMBA3_TILES", "MAMBAWEB_MAMBA3_CHUNK"):
        monkeypatch.delenv(var, raising=False)
    d16, d48 = _dev(16), _dev(48)
    assert T.chunk_len(d16, 64, 128, 32) == 16 and T.chunk_len(d48, 64, 128, 32) == 32
    assert T.blocks(d16, 16, 64, 128, 32, 1)[:2] == (32, 21)
    for dev, L in ((d16, 16), (d48, 32)):
        nbs, nbo, ws, ws4d, ws4o = T.blocks(dev, L, 64, 128, 32, 1)
        assert 4 * ws + 16 * max(ws4d, ws4o) <= dev.limits["maxComputeWorkgroupStorageSize"]
    assert not T.fits(d16, 32, 64, 128, 32, 1)
    assert T.chunk_len(d48, 64, 128, 32, R=4) == 8
    assert T.chunk_len(_dev(48, mamba3_chunk=8), 64, 128, 32) == 8
    assert T.chunk_len(_dev(1), 64, 128, 32) == 0
    assert T.tiles_on(_dev(16)) is True        # a real GPU
    fallback = _dev(16)
    fallback.info = {"is_fallback": True}
    assert T.tiles_on(fallback) is False and T.tiles_on(_dev(16, mamba3_tiles=True)) is True
    monkeypatch.setenv("MAMBAWEB_MAMBA3_TILES", "1")
    assert T.tiles_on(_dev(16)) is True
