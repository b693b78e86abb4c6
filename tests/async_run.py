"""Run a coroutine from a test, whatever owns this thread's event loop.

When the whole suite runs, the browser tests' Playwright session owns the main thread's loop,
so a bare asyncio.run() there fails ("cannot be called from a running event loop"); a fresh
thread has no loop of its own."""
import asyncio
from concurrent.futures import ThreadPoolExecutor


def run(coro):
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()
