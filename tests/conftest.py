"""Shared fixtures: a live server on a free port, one headless Chromium, the booted engine.

`engine.run(code, **args)` runs Python inside the page's Pyodide Worker and returns what the
snippet put in `result` (bytes come back as bytes). The machinery lives in tools/headless.py,
which the CLI uses too.
"""
from pathlib import Path

import pytest

from tools.headless import (CHROMIUM, CHROMIUM_ARGS, LiveServer, launch_chromium,  # noqa: F401
                            open_engine_page)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def scratch_models(tmp_path_factory):
    """A model folder the session server also serves; tests write models into it."""
    return tmp_path_factory.mktemp("scratch_models")


@pytest.fixture(scope="session")
def server(scratch_models):
    from server.app import create_app
    dirs = [REPO / "models", REPO / "tests" / "fixtures" / "models"]
    from tools.peer_engine import peer_static
    app = create_app([d for d in dirs if d.is_dir()] + [scratch_models], use_hf_cache=False,
                     extra_static=peer_static())
    with LiveServer(app) as live:
        yield live


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture(scope="session")
def engine(browser, server):
    handle = open_engine_page(browser, server.url)
    # "/" opens the default model by itself: let that load end (or fail) before a test counts
    # the GPU's buffers or replaces the current model, so none of its buffers land in a count
    handle.page.wait_for_function("document.body.dataset.loads !== undefined || "
                                  "!document.getElementById('model-error').hidden",
                                  timeout=120_000)
    yield handle
    handle.page.close()
