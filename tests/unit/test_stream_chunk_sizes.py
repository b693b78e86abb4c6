"""A streaming batch's chunk sizes (py_engine/gpu/batch.py): FIRST_CHUNK doubling to MAX_CHUNK,
or a bench variant's MAMBAWEB_STREAM_FIRST / MAMBAWEB_STREAM_MAX; a value that is not a power
of two up to 4096, or a first chunk past the largest, is refused by name. A fake device records each submit's dispatch count (no GPU)."""
import pytest

import py_engine.gpu.batch as B


class _Device:
    def __init__(self):
        self.submits = []

    def submit_commands(self, commands, dispatches, encoded=None, count=None):
        self.submits.append(dispatches)


def _chunks(n, stream=True):
    dev = _Device()
    b = B.Batch(dev, stream=stream)
    for _ in range(n):
        b.dispatch("pipe", "bind", 1)
    b.submit()
    return dev.submits


def test_default_chunks_double_from_first_to_max(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_STREAM_FIRST", raising=False)
    monkeypatch.delenv("MAMBAWEB_STREAM_MAX", raising=False)
    assert _chunks(600) == [32, 64, 128, 256, 120]
    assert _chunks(600, stream=False) == [600]


def test_the_variant_sets_first_and_max(monkeypatch):
    monkeypatch.setenv("MAMBAWEB_STREAM_FIRST", "8")
    monkeypatch.setenv("MAMBAWEB_STREAM_MAX", "16")
    assert _chunks(60) == [8, 16, 16, 16, 4]
    monkeypatch.setenv("MAMBAWEB_STREAM_FIRST", "64")
    monkeypatch.setenv("MAMBAWEB_STREAM_MAX", "64")
    assert _chunks(150) == [64, 64, 22]
    assert _chunks(150, stream=False) == [150]       # an unstreamed batch is one submit


@pytest.mark.parametrize("first,most,name", [
    ("24", "256", "MAMBAWEB_STREAM_FIRST"), ("32", "8192", "MAMBAWEB_STREAM_MAX"),
    ("0", "8", "MAMBAWEB_STREAM_FIRST"), ("a", "8", "MAMBAWEB_STREAM_FIRST"),
    ("64", "32", "MAMBAWEB_STREAM_FIRST")])
def test_a_malformed_variant_is_refused_by_name(monkeypatch, first, most, name):
    monkeypatch.setenv("MAMBAWEB_STREAM_FIRST", first)
    monkeypatch.setenv("MAMBAWEB_STREAM_MAX", most)
    with pytest.raises(ValueError, match=name):
        B.Batch(_Device(), stream=True)
