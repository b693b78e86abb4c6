"""tools/screenshots.py takes a README picture the way it says: the Convert page after a real
conversion (the page's own "done" state, its result line in the report), cropped full width at
1280 px and under the byte budget; a page that ends in an error stops the tool with the page's
message instead of a picture of the failure."""
import struct

import pytest

from tools import screenshots

pytestmark = pytest.mark.browser


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])        # IHDR width, height


def test_convert_picture_after_a_conversion(browser, server, tmp_path):
    shot = screenshots.convert(browser, server.url, tmp_path)
    path = tmp_path / "screenshot-convert.png"
    assert shot["file"] == str(path) and shot["bytes"] == path.stat().st_size
    assert 10_000 < shot["bytes"] < screenshots.MAX_BYTES
    width, height = png_size(path)
    assert width == screenshots.WIDTH and 300 < height < 2000
    assert "-> MBJS v2 f32 mamba-d40-tied.bin" in shot["stats"]


def test_an_error_state_stops_the_tool(browser, server, tmp_path, monkeypatch):
    # an untied head cannot become MBJS: the page says so, and the tool stops with that sentence
    monkeypatch.setattr(screenshots, "CONVERT_FIXTURE",
                        screenshots.REPO / "tests" / "fixtures" / "models" / "mamba-d24-untied")
    with pytest.raises(SystemExit, match="convert is 'error', not 'done': .*untied LM head"):
        screenshots.convert(browser, server.url, tmp_path)
    assert not (tmp_path / "screenshot-convert.png").exists()
