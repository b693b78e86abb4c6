"""The generate page as a person uses it: the default model loads by itself, a prompt
streams a continuation, Stop stops it, and the conversation state saves and restores."""
import pytest

from tools.headless import open_engine_page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(browser, server):
    handle = open_engine_page(browser, server.url, "/")
    handle.page.wait_for_function("document.body.dataset.model === 'default'", timeout=60_000)
    yield handle.page
    handle.page.close()


def _generate(page):
    n = int(page.evaluate("document.body.dataset.generations || '0'"))
    page.click("#generate-btn")
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}", timeout=120_000)


def test_default_model_generates(page):
    assert "MambaForCausalLM" in page.inner_text("#model-select") or "mamba" in page.inner_text("#model-select")
    page.fill("#prompt", "Hello")
    page.fill("#max-new", "24")
    page.check("#greedy")
    _generate(page)
    assert page.inner_text("#gen-error") == ""
    stats = page.inner_text("#gen-stats")
    assert "24 tokens" in stats and "tok/s" in stats and "dispatches/token" in stats
    first = page.inner_text("#output")
    _generate(page)   # greedy: the same prompt gives the same text
    assert page.inner_text("#output") == first


def test_stop_button_cancels(page):
    page.fill("#max-new", "4000")
    page.uncheck("#greedy")
    page.click("#generate-btn")
    page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('tok/s')", timeout=30_000)
    page.click("#stop-btn")
    page.wait_for_function("document.body.dataset.generating === undefined", timeout=60_000)
    assert "stopped" in page.inner_text("#gen-stats")


def test_state_save_and_restore(page):
    page.fill("#prompt", "abc")
    page.fill("#max-new", "8")
    page.check("#greedy")
    page.uncheck("#keep-state")
    _generate(page)
    page.click("#save-state-btn")
    page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('saved')")
    saved_text = page.inner_text("#output")
    page.fill("#prompt", "xyz")
    _generate(page)      # a different conversation replaces the state
    page.click("#restore-state-btn")
    page.wait_for_function("document.querySelector('#gen-stats').textContent.includes('restored')")
    assert page.inner_text("#output") == saved_text
    assert page.is_checked("#keep-state")


def test_local_model_folder_loads_without_upload(page):
    """Pick a model folder from disk (the fixture's HF folder): it loads in the tab and its
    greedy continuation equals transformers'."""
    import numpy as np
    from tests.conftest import REPO
    folder = REPO / "tests" / "fixtures" / "models" / "mamba-d24-untied"
    page.set_input_files("#local-model", str(folder))
    page.wait_for_function("document.body.dataset.model === 'local:mamba-d24-untied'", timeout=60_000)
    assert "(local)" in page.inner_text("#model-info")
    exp = np.load(folder / "expected.npz")
    ids = page.evaluate("""(ids) => window.engine.run(
        "from py_engine.app import generate_session as s\\n" +
        "r = await s.generate(ids=args['ids'], max_new_tokens=16, sampling={'greedy': True})\\n" +
        "result = r['ids']", {ids})""", exp["prompt_ids"].tolist())
    assert ids == exp["greedy_ids"].tolist()


def test_local_folder_without_config_is_explained(page, tmp_path):
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("not a model")
    page.set_input_files("#local-model", str(tmp_path / "stray"))
    page.wait_for_function("document.querySelector('#model-error').textContent.length > 0")
    assert "config.json" in page.inner_text("#model-error")
