"""Opening models on the generate page as a person does: by name from a server with the
Hugging Face Hub's layout (tests/hub_fixture.py: 302s to another origin for weights, a gated,
a missing, a GGUF-only and a llama repo), from a folder, and by dropping an MBJS file. The
model card follows every load and empties on a failed one; the same weights opened two ways
give the same logits and ids."""
import base64
import json

import numpy as np
import pytest
from safetensors import safe_open

from tests.hub_fixture import FIXTURES, HubServer, make_repos
from tools.headless import open_engine_page

pytestmark = pytest.mark.browser
BYTES = FIXTURES / "bytes-tiny-stdlib"
S = "from py_engine.app import generate_session as s\\n"
# greedy ids and the prompt's logits of whatever is loaded, through the page's own session
PROBE = ("""(ids) => window.engine.run(
    "%sr = await s.generate(ids=args['ids'], max_new_tokens=12, sampling={'greedy': True})\\n" +
    "result = {'ids': r['ids'], 'logits': await s.prompt_logits(ids=args['ids'])}", {ids})"""
         % S)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(make_repos(tmp_path_factory.mktemp("hub"))) as h:
        yield h


@pytest.fixture(scope="module")
def page(browser, server, hub):
    handle = open_engine_page(browser, server.url, f"/?hub={hub.url}")
    p = handle.page
    p.set_default_timeout(90_000)
    p.wait_for_function("document.body.dataset.model === 'default'")
    yield p
    p.close()


def _card(page):
    return page.eval_on_selector_all("#model-facts dd", "ds => Object.fromEntries("
                                     "ds.map((d) => [d.dataset.field, d.textContent]))")


def _probe(page, ids):
    r = page.evaluate(PROBE, ids)
    logits = np.frombuffer(base64.b64decode(r["logits"]["__bytes__"]), np.float32)
    return r["ids"], logits.reshape(len(ids), -1)


def _wait_model(page, key):
    """Wait for the page to claim model `key`; a load error fails with its sentence."""
    page.wait_for_function(f"document.body.dataset.model === {json.dumps(key)} || "
                           "!document.getElementById('model-error').hidden")
    assert page.is_hidden("#model-error"), page.inner_text("#model-error")
    assert page.evaluate("document.body.dataset.model") == key


def _open_hub(page, spec):
    page.fill("#hub-repo", spec)
    page.click("#hub-open")


def _params(folder):
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def test_by_name_equals_the_local_folder_and_the_card_follows(page, hub):
    _open_hub(page, "mambaweb-test/bytes-tiny")
    _wait_model(page, "hub:mambaweb-test/bytes-tiny")
    # the size was known (and shown) before the weights came
    assert int(page.evaluate("document.body.dataset.plannedBytes")) == \
        (BYTES / "model.safetensors").stat().st_size
    card = _card(page)
    assert card["name"] == "mambaweb-test/bytes-tiny"
    assert card["source"] == f"Hub: mambaweb-test/bytes-tiny at {hub.url}"
    assert card["family"] == "Mamba-1 (mamba)" and card["schedule"].startswith("2 layers: 2 × mamba1")
    assert card["parameters"].endswith(f"({_params(BYTES):,})")      # tied: the embedding once
    assert card["weights"] == "safetensors, f32 in the file, f32 on the GPU"
    assert card["tokenizer"].startswith("byte-level") and "no fixed limit" in card["context"]
    assert page.eval_on_selector("#model-select", "s => s.selectedOptions[0].textContent") == \
        "mambaweb-test/bytes-tiny (Hub)"
    # generate through the form, then read ids and logits through the same session
    page.fill("#prompt", "def f(x):")
    page.fill("#max-new", "12")
    page.check("#greedy")
    n = int(page.evaluate("document.body.dataset.generations || '0'"))
    page.click("#generate-btn")
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}")
    hub_text = page.inner_text("#output")
    prompt = list(b"def f(x):")
    hub_ids, hub_logits = _probe(page, prompt)

    # the same files as a folder from this computer: the card changes, the numbers do not
    page.set_input_files("#local-model", str(BYTES))
    _wait_model(page, "local:bytes-tiny-stdlib")
    card = _card(page)
    assert card["name"] == "bytes-tiny-stdlib"
    assert card["source"] == "a folder from this computer: bytes-tiny-stdlib"
    ids, logits = _probe(page, prompt)
    assert ids == hub_ids and np.array_equal(logits, hub_logits)
    n = int(page.evaluate("document.body.dataset.generations || '0'"))
    page.click("#generate-btn")
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}")
    assert page.inner_text("#output") == hub_text


@pytest.mark.parametrize("spec, fixture, fmt", [
    ("mambaweb-test/mamba2-sharded", "mamba2-g2-untied", "safetensors, 2 shards, f32"),
    ("mambaweb-test/mamba2-ssm-bin@v1", "mamba2-g1-tied-ssm-bin", "PyTorch .bin"),
])
def test_sharded_and_bin_repos_match_transformers(page, spec, fixture, fmt):
    """Shards behind an index, and a mamba_ssm repo with only pytorch_model.bin (read without
    unpickling): the logits are transformers' (expected.npz), within the engine's 1e-4."""
    _open_hub(page, spec)
    _wait_model(page, f"hub:{spec}")
    card = _card(page)
    assert card["name"] == spec and card["weights"].startswith(fmt)
    assert card["family"] == "Mamba-2 (mamba2)" and card["tokenizer"].startswith("none")
    exp = np.load(FIXTURES / fixture / "expected.npz")
    ids, logits = _probe(page, exp["prompt_ids"].tolist())
    assert np.abs(logits - exp["logits"]).max() <= 1e-4
    assert ids == exp["greedy_ids"].tolist()[:12]


@pytest.mark.parametrize("spec, words", [
    ("gated-org/secret", "is gated or private (HTTP 401)"),
    ("nobody/nothing", "nobody/nothing was not found on"),
    ("mambaweb-test/gguf-only", "holds only GGUF files (tiny-Q4_K_M.gguf)"),
    ("mambaweb-test/llama", "model_type 'llama' is not supported"),
    ("not a name", "is not a Hub model name"),
    ("", "Type a Hub model name first"),
])
def test_hub_failures_say_one_sentence_and_clear_the_model(page, spec, words):
    page.select_option("#model-select", "default")   # a model, so there is one to clear
    page.click("#load-btn")
    page.wait_for_function("document.body.dataset.model === 'default' && "
                           "!document.getElementById('generate-btn').disabled")
    assert not page.is_hidden("#model-facts")
    _open_hub(page, spec)
    page.wait_for_selector("#model-error:not([hidden]) .error-sentence")
    sentence = page.inner_text("#model-error .error-sentence")
    assert words in sentence, sentence
    assert "Traceback" not in sentence and "\n" not in sentence.strip()
    assert sentence[0].isupper() and sentence.endswith((".", ")"))
    if spec:                                    # an attempted load leaves nothing claimed
        page.wait_for_function("document.body.dataset.model === undefined")
        assert page.is_hidden("#model-facts") and page.is_disabled("#generate-btn")
        assert page.inner_text("#model-info") == "No model loaded."


def test_mbjs_file_by_keyboard_and_by_drop(page, tmp_path):
    """The drop zone takes an MBJS .bin (converted in the tab by the Convert page's planner
    and executor) with its tokenizer.json: Enter opens the chooser; a real drop event works
    too; the list and the card name the file; the numbers are the HF folder's."""
    from tools import convert_host
    mbjs = tmp_path / "bytes-tiny.bin"
    convert_host.convert(BYTES, mbjs, log=lambda *a: None)
    page.set_input_files("#local-model", str(BYTES))
    _wait_model(page, "local:bytes-tiny-stdlib")
    prompt = list(b"import os\n")
    ref_ids, ref_logits = _probe(page, prompt)

    # Enter on the focused zone opens its file chooser (seen as the hidden input's click, so
    # the test does not hang on the browser's dialog); the chosen files go in through it
    page.evaluate("""() => { const input = document.getElementById('model-drop-files');
        window.chooserOpened = 0; input.click = () => { window.chooserOpened += 1; }; }""")
    page.focus("#model-drop")
    page.keyboard.press("Enter")
    page.keyboard.press(" ")
    assert page.evaluate("window.chooserOpened") == 2
    page.set_input_files("#model-drop-files", [str(mbjs), str(BYTES / "tokenizer.json")])
    _wait_model(page, "mbjs:bytes-tiny.bin")
    card = _card(page)
    assert card["source"] == "a dropped MBJS file, converted in this tab: bytes-tiny.bin"
    assert card["tokenizer"].startswith("byte-level")
    assert page.eval_on_selector("#model-select", "s => s.selectedOptions[0].textContent") == \
        "bytes-tiny.bin (dropped MBJS file)"
    ids, logits = _probe(page, prompt)
    assert ids == ref_ids and np.abs(logits - ref_logits).max() <= 1e-6

    # a drop event carrying the file (as a person dragging it from the desktop)
    page.select_option("#model-select", "default")
    page.click("#load-btn")
    _wait_model(page, "default")
    page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name));
        const zone = document.getElementById('model-drop');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        }
    }""", [base64.b64encode(mbjs.read_bytes()).decode(), mbjs.name])
    _wait_model(page, "mbjs:bytes-tiny.bin")
    assert _card(page)["tokenizer"].startswith("byte-level")   # vocab 256: bytes without a file
    ids, _ = _probe(page, prompt)
    assert ids == ref_ids
    assert json.loads(json.dumps(_card(page)))["name"] == "bytes-tiny.bin"


def test_address_names_the_model_and_endpoint(browser, server, hub):
    """/?hub=URL&model=org/name opens that model instead of the default (a link to share)."""
    handle = open_engine_page(browser, server.url,
                              f"/?hub={hub.url}&model=mambaweb-test/mamba2-sharded")
    p = handle.page
    try:
        p.set_default_timeout(90_000)
        _wait_model(p, "hub:mambaweb-test/mamba2-sharded")
        assert p.input_value("#hub-repo") == "mambaweb-test/mamba2-sharded"
        assert _card(p)["source"] == f"Hub: mambaweb-test/mamba2-sharded at {hub.url}"
    finally:
        p.close()
