"""Run the engine headless: our server on a free port + Debian Chromium via Playwright.

Shared by the CLI commands that drive the browser (run, bench, pretrain, train-check) and by
the test fixtures, so both use exactly the same boot path as a person's Chrome tab.
"""
import base64
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("MAMBAWEB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
]


def worker_error_message(e):
    """The plain-words message of a Python error raised in the Worker, without its traceback
    or the JS stack Playwright appends: from the last `SomeError: ` line on (the engine's
    messages may list problems on the lines after it)."""
    import re
    lines = str(e).splitlines()
    start = None
    for i, line in enumerate(lines):
        if re.match(r"^\s*(?:[\w.]+(?:Error|Exception|Unavailable)): ", line):
            start = i
    if start is None:
        return str(e).strip()
    first = re.sub(r"^\s*[\w.]+: ", "", lines[start])
    rest = [ln for ln in lines[start + 1:] if ln.strip() and not ln.strip().startswith("at ")]
    return "\n".join([first] + rest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread; `url` is http://127.0.0.1:<free port>."""

    def __init__(self, app):
        import uvicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start within 20 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def encode(obj):
    """Python -> JSON-able, bytes and numpy arrays as {"__bytes__": base64}."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
        return encode(obj.tobytes())
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return base64.b64decode(obj["__bytes__"])
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def launch_chromium(pw, webgpu=True, extra_args=()):
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: install Debian's chromium "
                         "(`apt-get install chromium`, or run `make test` once)")
    args = [a for a in CHROMIUM_ARGS if webgpu or a != "--enable-unsafe-webgpu"]
    return pw.chromium.launch(executable_path=CHROMIUM, args=args + list(extra_args), headless=True)


class EngineHandle:
    """A page with the engine booted; `run(code, **args)` executes Python in its Worker."""

    def __init__(self, page, info, logs):
        self.page, self.info, self.logs = page, info, logs

    def run(self, code, timeout=600_000, **args):
        self.page.set_default_timeout(timeout)
        return decode(self.page.evaluate("([c, a]) => window.engine.run(c, a)", [code, encode(args)]))


def open_engine_page(browser, url, path="/"):
    page = browser.new_page()
    logs = []
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    page.goto(url + path)
    page.wait_for_function("document.body.dataset.engine !== undefined", timeout=120_000)
    info = page.evaluate("window.engineInfo || null")
    state = page.evaluate("document.body.dataset.engine")
    if state != "ready":
        raise RuntimeError(f"engine did not start ({state}): {info} {logs[-5:]}")
    return EngineHandle(page, info, logs)


@contextmanager
def headless_engine(model_dirs=None, use_hf_cache=True, path="/", extra_static=None):
    """Server + Chromium + booted engine page, torn down on exit."""
    from playwright.sync_api import sync_playwright
    from server.app import create_app
    app = create_app(model_dirs, use_hf_cache=use_hf_cache, extra_static=extra_static)
    with LiveServer(app) as live:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                handle = open_engine_page(browser, live.url, path)
                handle.server = live
                handle.browser = browser
                yield handle
            finally:
                browser.close()
