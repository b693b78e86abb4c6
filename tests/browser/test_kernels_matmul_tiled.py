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
    shaders/matmul_tiled_kk.wgsl, whose staged slices are sized by a pipeline constant."""
    info = check_products(engine, 70, 144, 150, big_tiles=True)
    assert info["kk_tiles"] == ["matmul_tiled_128_kk"], info


def test_16_byte_staged_products_with_unpadded_rows_in_chromium(engine):
    """The staged rows of 32 cells a device with WebGPU's default 16 KiB of workgroup memory
    gets (the pipeline constant S4 = 32), whatever this adapter offers."""
    padded = engine.run("import py_engine.ops.linear as L\nresult = L.KK_PADDED_BYTES")
    put = "import py_engine.ops.linear as L\nL.KK_PADDED_BYTES = {}\nresult = {{}}"
    engine.run(put.format(1 << 40))
    try:
        check_products(engine, 70, 144, 150, big_tiles=True, seed=2)
    finally:
        engine.run(put.format(padded))
    got = engine.run("result = sorted(str(k[2]) for k in device._pipelines "
                     "if k[0] == 'matmul_tiled_kk')")
    assert "(('S4', 32),)" in got, got


def test_split_k_products_in_chromium(engine):
    check_products(engine, 40, 1030, 24, big_tiles=False, split=True)
