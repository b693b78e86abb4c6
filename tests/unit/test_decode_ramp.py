"""A stream's first decode groups (generate.ramp_sizes): growing sizes below `group`, so the GPU
starts after one step's encoding and the first ids come back early. The streams themselves
(ids and states equal to a token-by-token decode, with and without the ramp) are checked in
tests/browser/test_decode_pipeline.py."""
from py_engine.models.generate import ramp_sizes


def test_ramp_grows_by_half_up_to_the_group():
    assert ramp_sizes(16) == [1, 2, 3, 4, 6, 8, 12]
    assert ramp_sizes(8) == [1, 2, 3, 4, 6]
    assert ramp_sizes(32) == [1, 2, 3, 4, 6, 8, 12, 18, 26]
    for group in range(1, 70):
        sizes = ramp_sizes(group)
        assert sizes == sorted(set(sizes)) and all(0 < k < group for k in sizes), group
        # each group at most ~1.5x the one before (+1 for the rounding up)
        assert all(b <= 1.5 * a + 1 for a, b in zip(sizes, sizes[1:])), group


def test_no_ramp():
    assert ramp_sizes(1) == []
    assert ramp_sizes(16, 0) == ramp_sizes(16, 1.0) == []
    assert ramp_sizes(16, 2) == [1, 2, 4, 8]


def test_the_bench_settings_are_read_as_numbers_or_refused(monkeypatch):
    """MAMBAWEB_DECODE_DEPTH (whole) and MAMBAWEB_DECODE_RAMP (a factor) for bench variants."""
    import pytest
    from py_engine.models.generate import _env_number
    monkeypatch.delenv("MAMBAWEB_DECODE_RAMP", raising=False)
    assert _env_number("MAMBAWEB_DECODE_RAMP", 1.5) == 1.5
    monkeypatch.setenv("MAMBAWEB_DECODE_RAMP", "0")
    assert _env_number("MAMBAWEB_DECODE_RAMP", 1.5) == 0.0
    monkeypatch.setenv("MAMBAWEB_DECODE_DEPTH", "4")
    assert _env_number("MAMBAWEB_DECODE_DEPTH", 3, whole=True) == 4
    for name, text, whole, words in (("MAMBAWEB_DECODE_DEPTH", "2.5", True, "a whole number"),
                                     ("MAMBAWEB_DECODE_DEPTH", "-1", True, "a whole number"),
                                     ("MAMBAWEB_DECODE_RAMP", "fast", False, "a number")):
        monkeypatch.setenv(name, text)
        with pytest.raises(ValueError, match=f"{name} must be {words}, got '{text}'"):
            _env_number(name, 1, whole=whole)
