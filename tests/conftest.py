"""Shared fixtures: a live server on a free port, one headless Chromium, the booted engine.

`engine.run(code, **args)` runs Python inside the page's Pyodide Worker and returns what the
snippet put in `result` (bytes come back as bytes).
"""
import base64
import os
import socket
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MAMBAWEB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
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
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from server.app import create_app
    dirs = [REPO / "models", REPO / "tests" / "fixtures" / "models"]
    app = create_app([d for d in dirs if d.is_dir()], use_hf_cache=False)
    with LiveServer(app) as live:
        yield live


def _decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return base64.b64decode(obj["__bytes__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _encode(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if hasattr(obj, "tobytes") and hasattr(obj, "dtype"):  # numpy array
        return _encode(obj.tobytes())
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class EngineHandle:
    def __init__(self, page, info):
        self.page = page
        self.info = info

    def run(self, code, timeout=120_000, **args):
        self.page.set_default_timeout(timeout)
        out = self.page.evaluate("([c, a]) => window.engine.run(c, a)", [code, _encode(args)])
        return _decode(out)


def open_engine_page(browser, url, path="/"):
    page = browser.new_page()
    logs = []
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    page.goto(url + path)
    page.wait_for_function("document.body.dataset.engine !== undefined", timeout=90_000)
    info = page.evaluate("window.engineInfo || null")
    assert page.evaluate("document.body.dataset.engine") == "ready", (info, logs)
    return EngineHandle(page, info)


@pytest.fixture(scope="session")
def engine(browser, server):
    handle = open_engine_page(browser, server.url)
    yield handle
    handle.page.close()
