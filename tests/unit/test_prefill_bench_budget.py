"""The prefill bench (py_engine.benchmarks.model.prefill_tokens_per_s) times up to `reps` runs
after its warm-up and stops early only on the timed runs' own time: a warm-up that builds
pipelines (seconds, the first model of a bench process) used to count against the budget and
leave one timed run, so the first variant's short prompts were judged on one sample. A fake
model whose forward takes a scripted time of a fake clock (tests/fake_clock.py; no GPU) shows
which runs were timed."""
import pytest

from py_engine.benchmarks import model as mb
from tests import fake_clock
from tests.async_run import run   # Playwright may own this thread's loop in the full suite

CLOCK = None     # this test's FakeClock, the bench's time.perf_counter


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    global CLOCK
    CLOCK = fake_clock.install(monkeypatch, mb)


class _Logits:
    async def to_bytes(self):
        return b""

    def release(self):
        pass


class _Batch:
    def __init__(self, device):
        self.device = device

    def submit(self):
        pass


class _Device:
    def batch(self, stream=False):
        return _Batch(self)


class _State:
    def reset(self):
        pass

    def release(self):
        pass


class _Cfg:
    vocab_size = 100


class FakeModel:
    """forward() takes the next of `seconds` on the fake clock (the warm-up's first)."""

    def __init__(self, seconds):
        self.seconds, self.calls = list(seconds), 0
        self.device, self.cfg = _Device(), _Cfg()

    def ids_tensor(self, ids):
        return _State()

    def new_state(self):
        return _State()

    def forward(self, ctx, ids, batch_size, state, last_only=False):
        CLOCK.now += self.seconds[self.calls]
        self.calls += 1
        return _Logits()


def test_a_slow_warm_up_still_leaves_every_timed_run():
    m = FakeModel([0.4, 0.1, 0.02, 0.1])
    r = run(mb.prefill_tokens_per_s(m, 8, reps=3, budget_s=0.3))
    assert m.calls == 4                       # the warm-up and all three timed runs
    assert r["seconds"] == pytest.approx(0.02)   # the best timed run, never the warm-up


def test_slow_timed_runs_still_stop_early():
    """A software adapter: the first timed run alone is past the budget, so no more follow."""
    m = FakeModel([0.01, 0.35, 0.01, 0.01])
    r = run(mb.prefill_tokens_per_s(m, 8, reps=3, budget_s=0.3))
    assert m.calls == 2 and r["seconds"] == pytest.approx(0.35)


class _TimedSubmitDevice:
    """Records which kind of batch each prefill asked for; a submit takes `submit_s`."""

    def __init__(self, submit_s):
        self.submit_s, self.kinds = submit_s, []

    def batch(self, stream=False):
        self.kinds.append(stream)
        dev = self

        class _B:
            device = dev

            def submit(self):
                CLOCK.now += dev.submit_s
        return _B()


def test_the_recorded_prefill_times_submit_to_logits_not_the_recording():
    """prefill_recorded_seconds records the whole graph into one unstreamed batch before its
    clock starts: a slow recording (forward) is left out, the submit's time is in."""
    m = FakeModel([0.2, 0.2])
    m.device = _TimedSubmitDevice(0.03)
    r = run(mb.prefill_recorded_seconds(m, 8, reps=2))
    assert m.calls == 2 and m.device.kinds == [False, False]
    assert r["recorded_seconds"] == pytest.approx(0.03)     # the submit, not the 0.2 s recording
    assert r["recorded_tokens_per_s"] == 8 / r["recorded_seconds"]
