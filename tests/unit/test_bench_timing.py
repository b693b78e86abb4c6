"""py_engine/benchmarks/timing.seconds_per_call, the loop every kernel benchmark times an op
with (foundation's matmul, prefill_ops, mamba3_scan): a warm-up submit, then reps doubling until
one submit takes min_seconds or reps reach max_reps. A fake device whose op sleeps (no GPU)."""
import time

from py_engine.benchmarks.timing import seconds_per_call
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


def test_reps_double_until_the_submit_takes_min_seconds():
    dev = _Device()

    def record(b):
        dev.pending += 1
        time.sleep(0.002)
    sec, reps = run(seconds_per_call(dev, record, min_seconds=0.015, max_reps=1024))
    assert dev.submits[0] == 1                        # the warm-up
    assert dev.submits[1:] == [2 ** i for i in range(len(dev.submits) - 1)]
    assert reps == dev.submits[-1] and reps * 0.002 >= 0.015 and reps // 2 * 0.002 < 0.015
    assert 0.002 <= sec < 0.004


def test_max_reps_caps_the_doubling():
    dev = _Device()
    sec, reps = run(seconds_per_call(dev, lambda b: None, min_seconds=10.0, max_reps=8))
    assert dev.submits == [0, 0, 0, 0, 0] and reps == 8 and sec >= 0
