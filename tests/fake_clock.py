"""A clock only a test's fakes advance, to stand in for a benchmark module's `time`.

The benchmarks time their loops with time.perf_counter; a test that checks a loop's arithmetic
with real sleeps and bounds fails when a loaded machine stretches them (a 2 ms sleep measured
7.3 ms in CI). `install(monkeypatch, module)` replaces module.time with a FakeClock, whose
perf_counter returns `now`; the fake op adds its scripted seconds to `now`."""


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def install(monkeypatch, module):
    clock = FakeClock()
    monkeypatch.setattr(module, "time", clock)
    return clock
