"""A resume after a lost GPU device reads the autosave only once the failed run's final
autosave has ended (py_engine/train/session.settle_previous), and reads it afresh when a file
changed while it was read (retry_unreadable): Chromium refuses a File whose bytes were
replaced after it was opened ("NotReadableError"), which a resume racing the old run's last
write met once in tests/e2e/test_faults_pages.py."""
import asyncio

import pytest

from py_engine.train import session as S
from tests.async_run import run


class _Run:
    """A session whose background run writes its final autosave after `delay` seconds."""

    def __init__(self, delay, fail=False):
        self.saved = False
        self.delay, self.fail = delay, fail
        self.task = None

    async def _run(self):
        await asyncio.sleep(self.delay)
        self.saved = True
        if self.fail:
            raise RuntimeError("the device was lost")


def test_a_resume_waits_for_the_previous_runs_final_autosave():
    async def go():
        old = _Run(0.2)
        old.task = asyncio.ensure_future(old._run())
        ended = await S.settle_previous(old, timeout=5)
        return ended, old.saved
    assert run(go()) == (True, True)


def test_a_failed_previous_run_is_waited_for_without_raising():
    async def go():
        old = _Run(0.1, fail=True)
        old.task = asyncio.ensure_future(old._run())
        ended = await S.settle_previous(old, timeout=5)
        try:
            await old.task                     # the run's own error stays the run's
        except RuntimeError:
            pass
        return ended, old.saved
    assert run(go()) == (True, True)


def test_a_hung_previous_run_is_given_up_on_after_the_timeout():
    async def go():
        old = _Run(60)
        old.task = asyncio.ensure_future(old._run())
        t0 = asyncio.get_running_loop().time()
        ended = await S.settle_previous(old, timeout=0.2)
        waited = asyncio.get_running_loop().time() - t0
        alive = not old.task.done()            # shielded: the wait did not cancel it
        old.task.cancel()
        return ended, alive, waited
    ended, alive, waited = run(go())
    assert not ended and alive and 0.15 <= waited < 5


def test_no_previous_run_or_a_finished_one_needs_no_wait():
    async def go():
        done = _Run(0)
        done.task = asyncio.ensure_future(done._run())
        await done.task
        return [await S.settle_previous(None), await S.settle_previous(_Run(0)),
                await S.settle_previous(done)]
    assert run(go()) == [True, True, True]


class NotReadable(Exception):
    """Stands in for Pyodide's JsException of a DOMException named NotReadableError."""
    name = "NotReadableError"


def test_a_file_changed_under_the_read_is_read_again():
    calls = []

    async def read():
        calls.append(1)
        if len(calls) < 3:
            raise NotReadable("The requested file could not be read")
        return "state"
    assert run(S.retry_unreadable(read, retries=3, pause=0)) == "state" and len(calls) == 3


def test_other_errors_and_the_last_unreadable_one_are_raised():
    calls = []

    async def damaged():
        calls.append(1)
        raise ValueError("the saved run cannot be resumed: state-a.safetensors is missing")
    with pytest.raises(ValueError, match="is missing"):
        run(S.retry_unreadable(damaged, retries=3, pause=0))
    assert len(calls) == 1                       # not retried

    async def unreadable():
        calls.append(1)
        raise NotReadable("The requested file could not be read")
    with pytest.raises(NotReadable):
        run(S.retry_unreadable(unreadable, retries=2, pause=0))
    assert len(calls) == 1 + 3


def test_a_training_run_is_refused_and_a_failed_one_waited_for():
    async def go():
        busy = _Run(60)
        busy.status = "running"
        try:
            await S.clear_for_a_new_run(busy)
            refused = None
        except ValueError as e:
            refused = str(e)
        failed = _Run(0.1)
        failed.status = "error"                # reported, its final autosave still going
        failed.task = asyncio.ensure_future(failed._run())
        await S.clear_for_a_new_run(failed)
        return refused, failed.saved
    refused, saved = run(go())
    assert refused == "a run is in progress: pause or stop it first" and saved
