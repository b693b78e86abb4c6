"""The tiled GEMM (shaders/matmul_tiled.wgsl) on the native backend (wgpu-py on lavapipe here):
every product of Linear against float64 numpy at shapes with ragged edges in M, N and K, both tile
sizes, and a K long enough to need lavapipe's loop-pass windows (ops/loop_budget.py). Skips, saying
why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.browser.tiled_matmul_cases import check_products
from tests.native_support import engine, native as pytestmark  # noqa: F401


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 3, 7), (64, 64, 64), (65, 130, 129),
                                   (200, 96, 70), (3, 4100, 9)])
@pytest.mark.parametrize("big_tiles", [False, True])
def test_tiled_products_equal_float64(engine, M, K, N, big_tiles):
    check_products(engine, M, K, N, big_tiles)


def test_long_k_is_windowed_on_lavapipe(engine):
    """K = 9000 is past the kernel's (conservative) loop-pass estimate for one dispatch: on
    lavapipe each product is split into K windows (each accumulating into C), and stays exact."""
    info = check_products(engine, 40, 9000, 24, big_tiles=False, seed=3)
    if engine.device.info.get("is_fallback"):
        assert info["dispatches"] > 4


@pytest.mark.parametrize("M,K,N", [(70, 1030, 20), (3, 4100, 9), (130, 600, 140)])
@pytest.mark.parametrize("big_tiles", [False, True])
def test_split_k_products_equal_float64(engine, M, K, N, big_tiles):
    """Few tiles, deep K: K in slices run side by side, the partials summed with bias and
    accumulation by matmul_split_reduce."""
    info = check_products(engine, M, K, N, big_tiles, seed=5, split=True)
    assert info["dispatches"] > 4           # a reduce after each product whose K was split


def test_big_tile_side_as_a_bench_variant(monkeypatch):
    """MAMBAWEB_BIG_TILE_MIN_SIDE moves the 128/64 tile boundary (bench variants): 161 puts a
    160-column product (mamba-1.4b's x_proj) on the 64 tile and leaves wider ones alone."""
    import py_engine.ops.linear as L
    monkeypatch.delenv("MAMBAWEB_BIG_TILE_MIN_SIDE", raising=False)
    assert L._tiles(1024, 160) == (128, 16) and L._tiles(1024, 4096) == (128, 256)
    monkeypatch.setenv("MAMBAWEB_BIG_TILE_MIN_SIDE", "161")
    assert L._tiles(1024, 160) == (64, 48) and L._tiles(1024, 4096) == (128, 256)
    monkeypatch.setenv("MAMBAWEB_BIG_TILE_MIN_SIDE", "big")
    with pytest.raises(ValueError, match="MAMBAWEB_BIG_TILE_MIN_SIDE must be a whole number"):
        L._tiles(1024, 160)
