"""py_engine/benchmarks/timing.seconds_per_call, the loop every kernel benchmark times an op
with (foundation's matmul, prefill_ops, mamba3_scan): a warm-up submit, then reps doubling until
one submit takes min_seconds or reps reach max_reps. A fake device whose op takes 2 ms of a fake clock (no GPU)."""
from py_engine.benchmarks.timing import seconds_per_call
from tests import fake_clock
from tests.async_run import run   # Playwright may own this thread's loop in the full suite


class _Batch:
    def __init__(self, dev):
        self.dev = dev

    def submit(self):
        self.dev.submits.append(self.dev.pending)
        self.dev.pending = 0


class _Device:
    def __init__(self):
        self.submits, self.pending = [], 0

    def batch(self):
        return _Batch(self)

    async def finish(self):
        pass


def test_reps_double_until_the_submit_takes_min_seconds(monkeypatch):
    from py_engine.benchmarks import timing
    dev, clock = _Device(), fake_clock.install(monkeypatch, timing)   # the fake op's 2 ms, exactly

    def record(b):
        dev.pending += 1
        clock.now += 0.002
    sec, reps = run(seconds_per_call(dev, record, min_seconds=0.015, max_reps=1024))
    assert dev.submits == [1, 1, 2, 4, 8]             # the warm-up, then doubling to 16 ms
    assert reps == 8 and abs(sec - 0.002) < 1e-12


def test_max_reps_caps_the_doubling():
    dev = _Device()
    sec, reps = run(seconds_per_call(dev, lambda b: None, min_seconds=10.0, max_reps=8))
    assert dev.submits == [0, 0, 0, 0, 0] and reps == 8 and sec >= 0
