"""Run the engine natively: CPython + wgpu-py (py_engine.gpu.native) + asyncio, no browser.

`NativeEngine.run(code, **args)` runs a snippet exactly like the page's engine does
(tools/headless.py: top-level await, `device` and `args` in scope, the snippet sets
`result`), so the CLI and the tests can send the same snippets to either backend.
"""
import ast
import asyncio
import threading
import os
import time


def wgpu_adapter():
    """(the adapter wgpu offers, None) or (None, why not: for skips/errors)."""
    try:
        import wgpu
    except ImportError as e:
        return None, f"wgpu-py is not installed ({e}): pip install wgpu"
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as e:
        return None, (f"wgpu found no Vulkan/Metal/D3D12 adapter ({str(e).splitlines()[0]}); "
                      "for a CPU one: apt-get install mesa-vulkan-drivers")
    if adapter is None:
        return None, "wgpu found no adapter; for a CPU one: apt-get install mesa-vulkan-drivers"
    return adapter, None


def wgpu_adapter_problem():
    """None when wgpu imports and offers an adapter; otherwise why not (for skips/errors)."""
    return wgpu_adapter()[1]


class NativeEngine:
    def __init__(self, blocking_waits=None):
        """blocking_waits: see NativeDevice.blocking_waits (default on; MAMBAWEB_NATIVE_BLOCKING=0
        awaits wgpu-py's poll thread instead)."""
        from py_engine.gpu.native import create_native_device
        # The engine's loop runs in its own thread: the caller's thread may already run a
        # loop (Playwright's sync API keeps one alive for a whole pytest session).
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="mambaweb-native-engine")
        self._thread.start()
        t0 = time.perf_counter()
        self.device = self.call(create_native_device())
        if blocking_waits is None:   # default on: nothing else runs on this loop
            blocking_waits = os.environ.get("MAMBAWEB_NATIVE_BLOCKING", "1") != "0"
        self.device.blocking_waits = bool(blocking_waits)
        self.info = {"adapter": self.device.info,
                     "boot_ms": round(1000 * (time.perf_counter() - t0), 1)}

    def run(self, code, **args):
        ns = {"__name__": "__snippet__", "args": args, "device": self.device, "result": None}
        compiled = compile(code, "<snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        out = eval(compiled, ns)
        if asyncio.iscoroutine(out):
            self.call(out)
        return ns.get("result")

    def call(self, coro):
        """Run one coroutine to completion on the engine's loop (in the engine's thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
