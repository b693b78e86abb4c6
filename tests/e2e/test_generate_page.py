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
    # the previous test's stats also say "tok/s": clear them, so the wait is for this run's
    page.evaluate("document.querySelector('#gen-stats').textContent = ''")
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


def test_lora_adapter_switches_without_reloading(page, tmp_path):
    """A PEFT adapter folder made on the host for the default model changes its greedy text;
    removing it brings the base's text back (the base itself never reloads)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file
    from tests.conftest import REPO
    from safetensors import safe_open
    cfg = json.loads((REPO / "models" / "default" / "config.json").read_text())
    with safe_open(str(REPO / "models" / "default" / "model.safetensors"), "np") as f:
        out_rows, D = f.get_slice("backbone.layers.0.mixer.in_proj.weight").get_shape()
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(cfg["num_hidden_layers"]):
        m = f"base_model.model.backbone.layers.{i}.mixer.in_proj"
        tensors[m + ".lora_A.weight"] = (rng.standard_normal((2, D)) * 0.5).astype(np.float32)
        tensors[m + ".lora_B.weight"] = (rng.standard_normal((out_rows, 2)) * 0.5).astype(np.float32)
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
         "target_modules": ["in_proj"], "lora_dropout": 0.0, "bias": "none"}))
    page.select_option("#model-select", "default")       # earlier tests opened other models
    page.click("#load-btn")
    page.wait_for_function("document.body.dataset.model === 'default' && "
                           "!document.getElementById('generate-btn').disabled", timeout=60_000)
    page.fill("#prompt", "def f(x):")
    page.fill("#max-new", "16")
    page.check("#greedy")
    page.uncheck("#keep-state")
    _generate(page)
    base_text = page.inner_text("#output")
    page.set_input_files("#adapter-files", str(folder))          # the folder picker
    page.wait_for_function("document.body.dataset.adapter === 'on'", timeout=60_000)
    assert "rank 2" in page.inner_text("#adapter-info")
    _generate(page)
    assert page.inner_text("#output") != base_text
    page.click("#adapter-remove")
    page.wait_for_function("document.body.dataset.adapter === 'off'", timeout=60_000)
    _generate(page)
    assert page.inner_text("#output") == base_text
    # a folder that is not an adapter is explained
    other = tmp_path / "not-an-adapter"
    other.mkdir()
    (other / "x.txt").write_text("x")
    page.set_input_files("#adapter-files", str(other))
    page.wait_for_function("document.getElementById('gen-error').textContent.includes('not a LoRA adapter')")
