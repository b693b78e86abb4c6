"""The L2 warming plan (py_engine/ops/l2_warm.py): its text, the refusal of a bad entry by name,
where it is off, and the byte ranges it binds (aligned, within the tensor's buffer, the parts
asked for)."""
import pytest

from py_engine.ops import l2_warm


def test_parse():
    assert l2_warm.parse("") == {} and l2_warm.parse("0") == {} and l2_warm.parse(None) == {}
    assert l2_warm.parse("x:out;s:inx;s:inz/2-6;o:in") == {
        "x": [("out", 0, 8)], "s": [("inx", 0, 8), ("inz", 2, 6)], "o": [("in", 0, 8)]}


@pytest.mark.parametrize("bad", ["q:out", "x:lm", "x:out/4-4", "x:out/0-9", "x:out/a-b", "x"])
def test_a_bad_entry_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="MAMBAWEB_L2_WARM entry") as e:
        l2_warm.parse("s:in;" + bad)
    assert repr(bad) in str(e.value)


class _Buf:
    def __init__(self, size):
        self.size = size


class _T:
    def __init__(self, buf, off, nbytes):
        self.binding = (buf, off, nbytes)


class _Dev:
    align = 256
    limits = {"maxStorageBuffersPerShaderStage": 16}
    features = {"subgroups"}
    info = {"is_fallback": False}

    def __init__(self, plan):
        self.l2_warm = plan


class _Mixer:
    def __init__(self, buf):
        self.out_w = _T(buf, 4096, 10000)
        self.in_x, self.in_z = _T(buf, 16384, 8000), _T(buf, 32768, 8000)

    def first_weights(self):
        return (self.in_x, self.in_z)


def test_ranges_cover_the_parts_asked_for():
    buf = _Buf(1 << 16)
    layer, nxt = _Mixer(buf), _Mixer(buf)
    dev = _Dev("x:out;s:inx/4-8;o:in")
    (b, off, n), = l2_warm.ranges(dev, "x", layer, nxt)
    assert b is buf and off == 4096 and n == 10000 // 16 * 16
    (b, off, n), = l2_warm.ranges(dev, "s", layer, nxt)
    # the second half of in_x, its start rounded down to the binding alignment
    assert off % 256 == 0 and off <= 16384 + 4000 < off + 256 and off + n <= 16384 + 8000 + 16
    two = l2_warm.ranges(dev, "o", layer, nxt)
    assert [r[1] for r in two] == [16384, 32768]
    assert l2_warm.ranges(dev, "o", layer, None) is None      # the last layer: nothing after it
    for stage in ("x", "s", "o"):
        for _, off, n in l2_warm.ranges(dev, stage, layer, nxt) or []:
            assert off % 256 == 0 and n % 16 == 0 and n >= 16 and off + n <= buf.size


def test_off_where_it_cannot_run(monkeypatch):
    dev = _Dev("x:out")
    assert l2_warm.plan(dev)
    dev.limits = {"maxStorageBuffersPerShaderStage": 10}      # SwiftShader's
    assert l2_warm.plan(dev) == {}
    dev = _Dev(None)
    dev.info = {"is_fallback": True}                           # a CPU adapter, by rule
    monkeypatch.setenv("MAMBAWEB_L2_WARM", "x:out")
    assert l2_warm.plan(dev) == {}
    monkeypatch.delenv("MAMBAWEB_L2_WARM")
    assert l2_warm.plan(_Dev(None)) == l2_warm.parse(l2_warm.RULE)
