"""The generate page as a document and as a product, acting as a person would: every failure
shows one plain sentence (details folded, never a traceback in front); a failed load leaves
no model claimed; the prompt and continuation read as one wrapping document; continuing
shows the person's own turns; a random seed per run unless locked; Regenerate; Ctrl+Enter;
the banner in plain words; no 404 on the way."""
import json

import pytest

from tests.conftest import REPO
from tools.headless import open_engine_page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(browser, server):
    handle = open_engine_page(browser, server.url, "/")
    p = handle.page
    p.wait_for_function("document.body.dataset.model === 'default'", timeout=60_000)
    p.set_default_timeout(60_000)
    yield p
    p.close()


def _generate(page, how="click", timeout=120_000):
    n = int(page.evaluate("document.body.dataset.generations || '0'"))
    if how == "click":
        page.click("#generate-btn")
    elif how == "regenerate":
        page.click("#regenerate-btn")
    else:
        page.focus("#prompt")
        page.keyboard.press(how)
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}", timeout=timeout)


def _error(page, box):
    """(the sentence a person reads, the folded details' text or None, details open?)"""
    page.wait_for_selector(f"#{box}:not([hidden]) .error-sentence")
    sentence = page.inner_text(f"#{box} .error-sentence")
    has_details = page.locator(f"#{box} details").count() > 0
    details = page.text_content(f"#{box} details pre") if has_details else None
    opened = page.eval_on_selector(f"#{box} details", "d => d.open") if has_details else False
    return sentence, details, opened


def _one_sentence(text):
    assert "Traceback" not in text and 'File "' not in text and "\n" not in text.strip(), text
    assert text[0].isupper() and text.rstrip().endswith((".", ")")), text


PAGE_WIDTH = """() => [document.documentElement.scrollWidth, window.innerWidth,
    [...document.querySelectorAll('body *')].filter((e) => e.scrollWidth > e.clientWidth + 1
        && getComputedStyle(e).overflowX === 'visible').map((e) => `${e.tagName}#${e.id} ${e.scrollWidth}/${e.clientWidth}`)]"""


def _reset(page):
    page.select_option("#model-select", "default")
    page.click("#load-btn")
    page.wait_for_function("document.body.dataset.model === 'default' && "
                           "!document.getElementById('generate-btn').disabled")
    page.uncheck("#keep-state")


def test_empty_prompt_and_bad_numbers_are_refused_with_a_sentence(page):
    _reset(page)
    runs = page.evaluate("document.body.dataset.generations")
    page.fill("#prompt", "")
    page.click("#generate-btn")
    sentence, details, _ = _error(page, "gen-error")
    _one_sentence(sentence)
    assert "prompt is empty" in sentence and details is None
    assert page.evaluate("document.body.dataset.generations") == runs      # nothing ran
    page.fill("#prompt", "abc")
    page.uncheck("#greedy")
    for field, value, words in [("#max-new", "0", "New tokens must be a whole number from 1 to 4096"),
                                ("#max-new", "2.5", "New tokens must be a whole number"),
                                ("#top-p", "1.5", "Top-p must be a number above 0"),
                                ("#temperature", "0", "Temperature must be a number above 0"),
                                ("#rep-penalty", "0.5", "Repetition penalty must be")]:
        before = page.input_value(field)
        page.fill(field, value)
        page.click("#generate-btn")
        page.wait_for_function("document.querySelector('#gen-error .error-sentence')?.textContent"
                               f".includes({json.dumps(words)})")
        sentence, _, _ = _error(page, "gen-error")
        _one_sentence(sentence)
        assert f"found {value}" in sentence
        assert page.evaluate("document.activeElement.id") == field[1:]   # the field to fix
        page.fill(field, before)
    # greedy: the fields it ignores are disabled, and a bad one there is not held against it
    page.fill("#temperature", "0")
    page.check("#greedy")
    for field in ("#temperature", "#top-k", "#top-p", "#seed", "#seed-lock"):
        assert page.is_disabled(field)
    assert page.is_enabled("#rep-penalty")
    page.fill("#max-new", "4")
    _generate(page)
    assert page.is_hidden("#gen-error")
    page.uncheck("#greedy")
    page.fill("#temperature", "0.8")
    assert page.is_enabled("#temperature")


def test_failed_loads_say_one_sentence_and_clear_the_model(page, tmp_path):
    _reset(page)
    # a folder with config.json only (no weights): the engine raises deep inside the loader
    only_cfg = tmp_path / "config-only"
    only_cfg.mkdir()
    (only_cfg / "config.json").write_text((REPO / "models" / "default" / "config.json").read_text())
    page.set_input_files("#local-model", str(only_cfg))
    sentence, details, opened = _error(page, "model-error")
    _one_sentence(sentence)
    assert sentence.startswith("Could not load the folder “config-only”")
    assert not opened
    # the page no longer claims the default model, and Generate waits for a model
    page.wait_for_function("document.body.dataset.model === undefined")
    assert page.inner_text("#model-info") == "No model loaded."
    assert page.is_disabled("#generate-btn") and page.is_disabled("#regenerate-btn")
    assert page.inner_text("#output") == ""
    # a .bin alone is converted in the tab as MBJS; one that is not says what it is not
    # (a real MBJS file loads: tests/e2e/test_generate_models.py)
    mbjs = tmp_path / "mbjs-only"
    mbjs.mkdir()
    (mbjs / "model.bin").write_bytes(b"MBJS" + bytes(60))
    page.set_input_files("#local-model", str(mbjs))
    page.wait_for_function("document.querySelector('#model-error .error-sentence')?.textContent.includes('MBJS')")
    sentence, _, _ = _error(page, "model-error")
    _one_sentence(sentence)
    assert "nor an MBJS checkpoint" in sentence
    # a good load clears the error and names what is loaded (no Python reprs)
    _reset(page)
    assert page.is_hidden("#model-error")
    info = page.inner_text("#model-info")
    assert info.startswith("default: ") and "tokenizer: " in info
    assert "Tokenizer(" not in info and " object at 0x" not in info and "<" not in info


def test_engine_errors_fold_the_traceback(page):
    """An exception raised in Python reaches the page as a traceback: only its message is
    the sentence; the traceback is in the closed details."""
    _reset(page)
    page.evaluate("""() => window.engine.run("from py_engine.app import generate_session as s\\ns.unload()")""")
    page.fill("#prompt", "abc")
    page.check("#greedy")
    page.click("#generate-btn")
    sentence, details, opened = _error(page, "gen-error")
    _one_sentence(sentence)
    assert sentence == "Generation failed: no model is loaded: choose one first."
    assert "Traceback" in details and "RuntimeError" in details and not opened


def test_prompt_and_continuations_read_as_one_document(page):
    _reset(page)
    page.check("#greedy")
    page.fill("#max-new", "12")
    page.fill("#prompt", "first turn")
    _generate(page)
    assert page.locator("#output .turn-prompt").all_inner_texts() == ["first turn"]
    first_text = page.inner_text("#output .turn-text")
    assert page.inner_text("#output") == "first turn" + first_text
    # continuing: the person's own second turn is shown, after the first exchange
    page.check("#keep-state")
    page.fill("#prompt", "\nsecond turn")
    _generate(page, "Control+Enter")                  # the keyboard shortcut generates
    prompts = page.locator("#output .turn-prompt").all_text_contents()
    assert prompts == ["first turn", "\nsecond turn"]
    texts = page.locator("#output .turn-text").all_text_contents()
    assert texts[0] == first_text and len(texts) == 2
    # the prompt is muted: a different colour from the continuation
    colours = page.evaluate("""() => ['.turn-prompt', '.turn-text'].map(
        (s) => getComputedStyle(document.querySelector('#output ' + s)).color)""")
    assert colours[0] != colours[1]
    # without "Continue" a new document starts
    page.uncheck("#keep-state")
    page.fill("#prompt", "fresh")
    _generate(page, "Meta+Enter")
    assert page.locator("#output .turn-prompt").all_text_contents() == ["fresh"]


def test_continuing_feeds_the_whole_transcript(page):
    """A continued turn sees every earlier token: greedy (no penalty) continuation of turn 2
    equals a fresh greedy run on the concatenated text (byte tokenizer: ids concatenate)."""
    _reset(page)
    page.check("#greedy")
    page.fill("#rep-penalty", "1")
    page.fill("#max-new", "12")
    page.fill("#prompt", "class A:\n    def")
    _generate(page)
    page.check("#keep-state")
    page.fill("#prompt", "\n    def")
    _generate(page)
    turn2 = page.locator("#output .turn-text").all_text_contents()[1]
    whole = page.inner_text("#output")[: -len(turn2)]
    page.uncheck("#keep-state")
    page.fill("#prompt", whole)
    _generate(page)
    assert page.text_content("#output .turn-text") == turn2
    page.fill("#rep-penalty", "1.1")


def test_seed_is_random_unless_locked_and_regenerate_repeats(page):
    _reset(page)
    page.uncheck("#greedy")
    page.fill("#max-new", "16")
    page.fill("#prompt", "def f(x):")
    seeds = []
    for _ in range(2):
        _generate(page)
        seeds.append(page.input_value("#seed"))
        assert f"seed {seeds[-1]}" in page.inner_text("#gen-stats")
    assert seeds[0] != seeds[1]
    # locked: the same seed every time, so Regenerate gives the same text
    page.check("#seed-lock")
    page.fill("#seed", "1234")
    _generate(page)
    text = page.inner_text("#output")
    _generate(page, "regenerate")
    assert page.input_value("#seed") == "1234" and page.inner_text("#output") == text
    # Regenerate of a continued turn replaces that turn only: the earlier turn stays, the
    # same prompt is run again from the state saved before it. (Exact equality is not asserted:
    # restoring a state snapshot does not yet reproduce greedy text bit for bit; see report.)
    page.check("#keep-state")
    page.fill("#prompt", " and then")
    _generate(page)
    assert page.inner_text("#output").startswith(text + " and then")
    page.fill("#prompt", "something else")          # Regenerate repeats the last request
    _generate(page, "regenerate")
    assert page.locator("#output .turn-prompt").all_text_contents() == ["def f(x):", " and then"]
    assert page.inner_text("#output").startswith(text + " and then")
    page.uncheck("#seed-lock")
    page.uncheck("#keep-state")


def test_long_output_wraps_inside_the_page(page):
    """A 2,000-token run after a 3,000-character unbroken prompt: the document wraps, the
    page stays as wide as the viewport, and the view follows the end. On the byte-level tiny
    model (its greedy continuation is 2,000 more x's, one unbroken line): ~10 s on SwiftShader,
    where the default model's 1,500-token prefill alone took 37 s and the run ~3 min in CI."""
    page.select_option("#model-select", "bytes-tiny-stdlib")
    page.click("#load-btn")
    page.wait_for_function("document.body.dataset.model === 'bytes-tiny-stdlib' && "
                           "!document.getElementById('generate-btn').disabled", timeout=60_000)
    page.uncheck("#keep-state")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.check("#greedy")
    page.fill("#max-new", "2000")
    page.fill("#prompt", "x" * 3000)
    _generate(page, timeout=300_000)
    assert page.is_hidden("#gen-error")
    assert "2000 tokens" in page.inner_text("#gen-stats")
    width = page.evaluate(PAGE_WIDTH)
    assert width[0] <= width[1], width
    out = page.evaluate("""() => { const o = document.getElementById('output');
        return [o.scrollWidth, o.clientWidth, o.scrollHeight - o.scrollTop - o.clientHeight]; }""")
    assert out[0] <= out[1] and out[2] < 40, out
    page.set_viewport_size({"width": 390, "height": 800})
    width = page.evaluate(PAGE_WIDTH)
    assert width[0] <= width[1], width
    page.set_viewport_size({"width": 1280, "height": 800})


def test_whitespace_only_output_is_noted(page):
    """The previous default model's greedy continuation of a Python def line is spaces (issue
    16): the page says so instead of looking idle."""
    page.select_option("#model-select", "bytes-tiny-stdlib")
    page.click("#load-btn")
    page.wait_for_function("document.body.dataset.model === 'bytes-tiny-stdlib' && "
                           "!document.getElementById('generate-btn').disabled", timeout=60_000)
    page.uncheck("#keep-state")
    page.check("#greedy")
    page.fill("#max-new", "64")
    page.fill("#prompt", "def fibonacci(n):")
    _generate(page)
    text = page.text_content("#output .turn-text")
    assert text.strip() == "" and len(text) > 0
    note = page.inner_text("#output-note")
    assert note.startswith("The model produced only whitespace (") and "in 64 tokens" in note
    page.fill("#prompt", "The ")               # greedy text that shows: the note goes
    page.fill("#max-new", "16")
    _generate(page)
    assert page.text_content("#output .turn-text").strip()
    assert page.is_hidden("#output-note")


def test_banner_is_plain_and_nothing_404s(browser, server):
    handle = open_engine_page(browser, server.url, "/")
    p = handle.page
    missing = []
    p.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    p.reload()
    p.wait_for_function("document.body.dataset.model === 'default'", timeout=60_000)
    line = p.inner_text("#engine-line")
    assert line.startswith("Ready · ")
    if handle.info["adapter"]["is_fallback"]:
        assert line == "Ready · no GPU found, running on a CPU emulation — slow"
    assert "Python" not in line and "features" not in line
    assert not p.eval_on_selector("#engine-status details", "d => d.open")
    p.click("#engine-status summary")
    assert "Python" in p.inner_text("#engine-status details")
    assert p.evaluate("fetch('/favicon.ico').then((r) => r.status)") == 200
    assert missing == []
    p.close()
