"""The tiled GEMMs that Chrome on a real GPU runs for prefill and training (shaders/matmul_tiled.wgsl,
shaders/matmul_tiled_kk.wgsl),
compiled by Chromium's own WGSL compiler and run on SwiftShader: every product of Linear against
float64 numpy, both tile sizes, ragged edges (tests/browser/tiled_matmul_cases.py)."""
import pytest

from tests.browser.tiled_matmul_cases import check_products

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("big_tiles", [False, True])
def test_tiled_products_in_chromium(engine, big_tiles):
    check_products(engine, 70, 133, 150, big_tiles)


def test_16_byte_staged_products_in_chromium(engine):
    """K of whole 16-deep steps: x @ W^T (and out += x @ W^T) in 128 tiles take
    shaders/matmul_tiled_kk.wgsl (its staged rows need more than WebGPU's default 16 KiB of
    workgroup memory, which this adapter offers). Forced: the browser's rule leaves it off
    (py_engine/ops/linear._kk_ok)."""
    info = check_products(engine, 70, 144, 150, big_tiles=True, kk=True)
    assert info["kk_tiles"] == ["matmul_tiled_128_kk"], info


def test_a_device_without_room_for_the_padded_rows_keeps_the_scalar_tile(engine):
    """A device offering only WebGPU's default 16 KiB of workgroup memory: the same products
    through shaders/matmul_tiled.wgsl, even with the kk kernel asked for."""
    room = engine.run("import py_engine.ops.linear as L\nresult = L.KK_BYTES")
    put = "import py_engine.ops.linear as L\nL.KK_BYTES = {}\nresult = {{}}"
    engine.run(put.format(1 << 40))     # more than any device offers
    # forget the kk pipeline an earlier test built: the cache is what check_products reads
    engine.run("device.forget_shader('matmul_tiled_kk')\nresult = {}")
    try:
        info = check_products(engine, 70, 144, 150, big_tiles=True, seed=2, kk=True)
    finally:
        engine.run(put.format(room))
    assert info["kk_tiles"] == [], info


def test_split_k_products_in_chromium(engine):
    check_products(engine, 40, 1030, 24, big_tiles=False, split=True)
