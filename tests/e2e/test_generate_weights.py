"""The generate page's weight format and the browser's cache of fetched weights, as a person
uses them (issues 10 and 16).

Format: the selector shows what each format would take on the GPU for the chosen model before
it loads (equal to the host's plan from the same headers and to the loaded tensors), changing
it reloads the model in that format, the card says the format and the bytes, generation works,
and the choice is remembered for that model after a page reload.

Cache: the first load of a served model or a Hub model by name sends range requests; the next
load reads the weights from OPFS and the server sees none (asserted on the servers' own request
logs); a damaged or truncated entry is found, dropped and fetched again with the same output;
"Clear cached models" empties it; a full storage streams uncached and says so once.

Each page here is its own browser context, so its OPFS starts empty."""
import json

import pytest

from tests.async_run import run
from tests.conftest import REPO
from tests.hub_fixture import make_hub_app, make_repos
from tools.headless import LiveServer, open_engine_page

pytestmark = pytest.mark.browser
DEFAULT = REPO / "models" / "default"


class RequestLog:
    """ASGI wrapper that records (method, path, Range header) of every request."""

    def __init__(self, app=None):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.seen.append((scope["method"], scope["path"], headers.get("range")))
        await self.app(scope, receive, send)

    def mark(self):
        return len(self.seen)

    def ranges(self, since=0, path_part=""):
        return [s for s in self.seen[since:] if s[2] is not None and path_part in s[1]]


@pytest.fixture(scope="module")
def served():
    from server.app import create_app
    log = RequestLog(create_app([REPO / "models"], use_hf_cache=False))
    with LiveServer(log) as live:
        live.log = log
        yield live


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    repos = make_repos(tmp_path_factory.mktemp("hub"))
    log = RequestLog()
    live = LiveServer(log)
    log.app = make_hub_app(repos, f"http://localhost:{live.port}")   # weights 302 to the "CDN"
    with live:
        live.log = log
        yield live


@pytest.fixture(scope="module")
def page(browser, served, hub):
    handle = open_engine_page(browser, served.url, f"/?hub={hub.url}")
    p = handle.page
    p.set_default_timeout(120_000)
    p.wait_for_function("document.body.dataset.model === 'default' && "
                        "!document.getElementById('generate-btn').disabled")
    yield p
    p.close()


def _host_plan():
    from py_engine.io.byte_sources import LocalSource
    from py_engine.io.hf_loader import read_plan
    return run(read_plan(LocalSource(DEFAULT)))[2]


def _card(page):
    return page.eval_on_selector_all("#model-facts dd", "ds => Object.fromEntries("
                                     "ds.map((d) => [d.dataset.field, d.textContent]))")


def _loads(page):
    return int(page.evaluate("document.body.dataset.loads || '0'"))


def _wait_load(page, before):
    # and no plan in flight: the change event's plan of the chosen model can open its cache
    # entry after the load closed it (CI once met its lock in CORRUPT's createWritable)
    page.wait_for_function(f"+(document.body.dataset.loads || 0) > {before} && "
                           "!document.getElementById('weights-format').disabled && "
                           "!+(document.body.dataset.planning || 0)")
    assert page.is_hidden("#model-error"), page.inner_text("#model-error")


def _option_bytes(page):
    return page.eval_on_selector_all("#weights-format option", "os => Object.fromEntries("
                                     "os.map((o) => [o.value, +o.dataset.gpuBytes]))")


def _loaded_gpu_bytes(page):
    return page.evaluate("""() => window.engine.run(
        "from py_engine.app import generate_session as s\\n" +
        "from py_engine.io.weight_formats import format_summary\\n" +
        "result = format_summary(s.current['model'].weights)['gpu_bytes']")""")


def _generate(page, prompt="def fibonacci(n):", n=8):
    page.fill("#prompt", prompt)
    page.fill("#max-new", str(n))
    page.check("#greedy")
    page.uncheck("#keep-state")
    before = int(page.evaluate("document.body.dataset.generations || '0'"))
    page.click("#generate-btn")
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {before}")
    assert page.is_hidden("#gen-error"), page.inner_text("#gen-error")
    assert f"{n} tokens" in page.inner_text("#gen-stats")
    return page.inner_text("#output .turn-text")


def _load_default(page):
    before = _loads(page)
    page.select_option("#model-select", "default")
    page.click("#load-btn")
    _wait_load(page, before)


def _mb(n):
    return f"{n / 1e6:.2f} MB"


def test_formats_show_their_gpu_bytes_and_reload_the_model(page, served):
    plan = _host_plan()["gpu_bytes_by_format"]
    assert plan["q4"] < plan["q8"] < plan["f16"] == plan["bf16"] < plan["f32"]
    # before any choice: f32, every option labelled with the bytes it would take
    assert page.input_value("#weights-format") == "f32"
    assert _option_bytes(page) == plan
    assert "q8 (8-bit, a scale per row) · " + _mb(plan["q8"]) + " on the GPU" in \
        page.inner_text("#weights-format")
    card = _card(page)
    assert card["weights"] == "safetensors, f32 in the file, f32 on the GPU"
    assert card["gpu"] == f"{_mb(plan['f32'])} of weights, all f32"
    assert served.log.ranges(path_part="/weights/default/model.safetensors")   # first: fetched

    for fmt in ("q8", "q4"):
        before = _loads(page)
        page.select_option("#weights-format", fmt)        # the change reloads the model
        _wait_load(page, before)
        card = _card(page)
        assert card["weights"] == f"safetensors, f32 in the file, {fmt} on the GPU"
        assert card["gpu"].startswith(f"{_mb(plan[fmt])} of weights, ")
        assert card["gpu"].endswith(f"tensors {fmt} (the rest f32)")
        assert _loaded_gpu_bytes(page) == plan[fmt]
        assert _option_bytes(page) == plan and page.input_value("#weights-format") == fmt
        text = _generate(page)
        assert text.strip(), f"{fmt}: empty continuation"
    assert page.evaluate("localStorage.getItem('mambaweb:weights-format:default')") == "q4"


def test_second_load_reads_the_cache_with_no_range_request(page, served):
    # a page reload keeps this browser's storage: the default model comes back as q4 (its
    # remembered format) from OPFS; the server sees HEADs and small files, no Range
    mark = served.log.mark()
    page.reload()
    page.wait_for_function("document.body.dataset.model === 'default' && "
                           "!document.getElementById('generate-btn').disabled")
    assert page.input_value("#weights-format") == "q4"
    assert "q4 on the GPU" in _card(page)["weights"]
    assert served.log.ranges(mark) == []
    weight_gets = [s for s in served.log.seen[mark:]
                   if s[1].endswith("model.safetensors") and s[0] == "GET"]
    assert weight_gets == [], weight_gets
    assert "weights read from this browser's cache" in page.inner_text("#model-info")
    page.wait_for_function("+(document.body.dataset.cacheBytes || 0) > 0")
    assert "MB of weights kept in this browser" in page.inner_text("#cache-info")
    page.evaluate("window.q4Text = null")
    q4_text = _generate(page)
    page.evaluate("(t) => { window.q4Text = t; }", q4_text)


CORRUPT = """async (how) => {
  const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("mambaweb-weights");
  const done = [];
  for await (const [name, h] of dir.entries()) {
    if (!name.endsWith(".bin")) continue;
    const f = await h.getFile();
    const w = await h.createWritable({ keepExistingData: true });
    if (how === "flip") {
      const at = Math.floor(f.size / 2);
      const b = new Uint8Array(await f.slice(at, at + 1).arrayBuffer());
      await w.write({ type: "write", position: at, data: new Uint8Array([b[0] ^ 0xff]) });
    } else {
      await w.truncate(Math.floor(f.size / 3));
    }
    await w.close();
    done.push([name, f.size]);
  }
  return done;
}"""


@pytest.mark.parametrize("how, words", [("flip", "its checksum does not match"),
                                        ("truncate", "it was truncated")])
def test_a_damaged_entry_is_fetched_again(page, served, how, words):
    q4_text = page.evaluate("window.q4Text")
    assert q4_text
    changed = page.evaluate(CORRUPT, how)
    assert len(changed) == 1 and changed[0][1] > 10_000_000, changed
    mark = served.log.mark()
    _load_default(page)
    assert served.log.ranges(mark, "/weights/default/model.safetensors")     # refetched
    note = page.inner_text("#cache-note")
    assert "cached copy of model.safetensors was dropped and fetched again" in note and words in note
    assert _generate(page) == q4_text                                          # same weights
    mark = served.log.mark()
    _load_default(page)                                                        # repaired
    assert served.log.ranges(mark) == []
    assert page.is_hidden("#cache-note")


def test_hub_model_by_name_is_cached_too(page, hub):
    mark = hub.log.mark()
    before = _loads(page)
    page.fill("#hub-repo", "mambaweb-test/bytes-tiny")
    page.click("#hub-open")
    _wait_load(page, before)
    assert page.evaluate("document.body.dataset.model") == "hub:mambaweb-test/bytes-tiny"
    first = hub.log.ranges(mark, "/cdn/mambaweb-test/bytes-tiny/model.safetensors")
    assert first, hub.log.seen[mark:]
    assert "weights kept in this browser for the next load" in page.inner_text("#model-info")
    mark = hub.log.mark()
    before = _loads(page)
    page.click("#hub-open")
    _wait_load(page, before)
    assert hub.log.ranges(mark) == [], hub.log.seen[mark:]
    assert "weights read from this browser's cache" in page.inner_text("#model-info")


def test_clear_cached_models(page, served):
    assert int(page.evaluate("document.body.dataset.cacheBytes")) > 0
    page.click("#cache-clear")
    page.wait_for_function("document.body.dataset.cacheBytes === '0'")
    assert "none yet" in page.inner_text("#cache-info")
    assert "cleared" in page.inner_text("#cache-note")
    mark = served.log.mark()
    _load_default(page)
    assert served.log.ranges(mark, "/weights/default/model.safetensors")


HOLD_ENTRY = """
import js
h = await js.mwCache.open(args['url'])
setattr(js.self, args['name'], h)
result = h.mode
"""
RELEASE_ENTRIES = """
import js
from pyodide.ffi import to_js
await js.mwCache.finish(to_js([getattr(js.self, n) for n in args['names']]), True)
result = True
"""


def test_clear_waits_for_an_entry_open_in_the_worker(page, served):
    # a plan of the list's model runs beside the buttons and holds its entry's file lock while
    # it re-checks the pieces; "Clear cached models" then waits for it instead of failing
    # (the previous test's load reports the cache's size without being awaited: wait for it)
    page.wait_for_function("+(document.body.dataset.cacheBytes || 0) > 0")
    url = page.evaluate("new URL('/weights/default/model.safetensors', location.href).href")
    run = "([code, args]) => window.engine.run(code, args)"
    assert page.evaluate(run, [HOLD_ENTRY, {"url": url, "name": "mwHeldA"}]) == "cache"
    page.click("#cache-clear")
    page.wait_for_timeout(1500)                 # the clear waits while the entry is held
    assert page.is_hidden("#model-error"), page.inner_text("#model-error")
    assert page.inner_text("#cache-note") == "Clearing cached models…"
    assert int(page.evaluate("document.body.dataset.cacheBytes")) > 0
    # the holder opens its next file meanwhile (a plan reads config.json, then the weights):
    # that open must not wait for the clear, which waits for the holder
    other = url.replace("model.safetensors", "config.json")
    bounded = ("([code, args]) => Promise.race([window.engine.run(code, args), new Promise("
               "(_, no) => setTimeout(() => no(new Error('the open waited for the clear')), 20000))])")
    assert page.evaluate(bounded, [HOLD_ENTRY, {"url": other, "name": "mwHeldB"}]) == "cache"
    assert page.evaluate(run, [RELEASE_ENTRIES, {"names": ["mwHeldA", "mwHeldB"]}]) is True
    page.wait_for_function("document.body.dataset.cacheBytes === '0' || "
                           "!document.getElementById('model-error').hidden")
    assert page.is_hidden("#model-error"), page.inner_text("#model-error")
    assert "cleared" in page.inner_text("#cache-note")
    assert "none yet" in page.inner_text("#cache-info")


def test_full_storage_streams_uncached_and_says_so_once(page, served):
    # the previous test left cacheBytes at '0': clear the flag so that '0' means this clear
    # has finished (its last step reports the size), not the one before
    page.evaluate("delete document.body.dataset.cacheBytes")
    page.click("#cache-clear")
    page.wait_for_function("document.body.dataset.cacheBytes === '0'")
    # the storage "fills up" after 100 kB: the header fits, the first 16 MiB chunk does not
    page.evaluate("window.engine.call({op: 'cacheDebug', quota: 100000})")
    try:
        notices = int(page.evaluate("document.body.dataset.cacheNotices || '0'"))
        page.evaluate("delete document.body.dataset.cacheBytes")
        _load_default(page)
        assert int(page.evaluate("document.body.dataset.cacheNotices")) == notices + 1
        note = page.inner_text("#cache-note")
        assert note.startswith("This browser's storage is full, so model.safetensors streams "
                               "without being kept for the next load"), note
        assert "Traceback" not in note
        assert page.evaluate("window.q4Text") == _generate(page)   # the model works as before
        # nothing half-kept: the size the load reported after it (the flag cleared before it)
        page.wait_for_function("document.body.dataset.cacheBytes === '0'")
        mark = served.log.mark()
        _load_default(page)                                        # still not cached: streams
        assert served.log.ranges(mark, "/weights/default/model.safetensors")
    finally:
        page.evaluate("window.engine.call({op: 'cacheDebug', quota: null})")
    assert json.loads(json.dumps(_card(page)))["name"] == "default"
