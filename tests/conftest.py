"""Shared fixtures: a live server on a free port, one headless Chromium, the booted engine.

`engine.run(code, **args)` runs Python inside the page's Pyodide Worker and returns what the
snippet put in `result` (bytes come back as bytes). The machinery lives in tools/headless.py,
which the CLI uses too.
"""
import os
from pathlib import Path

import pytest

from tools.headless import (CHROMIUM, CHROMIUM_ARGS, LiveServer, launch_chromium,  # noqa: F401
                            open_engine_page)

REPO = Path(__file__).resolve().parent.parent


# Strict runs (MAMBAWEB_STRICT_TESTS=1: `make test`, hence CI). The native backend's tests must
# run, as the browser's must: `make test` installs a Vulkan driver, so a missing adapter or a
# wgpu-py that no longer imports or finds one is a broken install that stops the run at once,
# not a reason for ~60 files to skip. And on a CPU adapter (lavapipe: CI's), where every test
# is known to run, a skipped test fails the run, named at the end -- unless it is marked
# `may_skip` (the Dawn tests: npm's `webgpu` download, which the Makefile goes on without). On
# a GPU, tests that skip for its limits stay skips.
_no_skips = False
_skipped = []


def pytest_sessionstart(session):
    global _no_skips
    if os.environ.get("MAMBAWEB_STRICT_TESTS") != "1":
        return
    from tools.native_engine import wgpu_adapter
    adapter, problem = wgpu_adapter()
    if problem is not None:
        pytest.exit(f"the native backend's tests cannot run: {problem} (MAMBAWEB_STRICT_TESTS=1; "
                    "unset it to let them skip)", returncode=3)
    _no_skips = str(adapter.info.get("adapter_type", "")).upper() == "CPU"


def pytest_runtest_logreport(report):
    if _no_skips and report.skipped and not hasattr(report, "wasxfail") \
            and "may_skip" not in report.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _skipped and not hasattr(session.config, "workerinput"):    # the xdist controller / -n 0
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("")
            tr.write_line("\n".join([f"{len(_skipped)} test(s) skipped in a strict run "
                                      "(MAMBAWEB_STRICT_TESTS=1, a CPU adapter), where every "
                                      "check must run:"] + _skipped), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
