"""GPU and tab faults on the pages (issue 13), as a person meets them: the GPU device is lost
mid-generation and mid-training (the Worker's test hook calls device.destroy(), as a driver
reset would); a tab is closed mid-training and reopened; the autosave is corrupted on disk.
Each time the page says what happened in plain words and goes on without a page reload:
the engine restarts on a new adapter and device, the generate page reloads its model, the
train page continues from the checksummed autosave with the loss curve of a run that was
never interrupted (a run from scratch and a LoRA fine-tune); a damaged autosave is refused by name and the previous one used."""
import pytest

from tools.headless import open_engine_page

pytestmark = pytest.mark.browser

HISTORY = "window.engine.run('from py_engine.train import session as S\\nresult = S.current.history')"
SETTINGS = {"#cfg-hidden_size": 32, "#lr": "5e-3", "#batch": 2, "#seq_len": 32, "#steps": 12,
            "#sample_every": 0}


def lose_device(page):
    assert page.evaluate("window.engine.call({op: 'debugLoseDevice'})") is True


def msg(page):
    return page.inner_text("#message") if page.is_visible("#message") else ""


def test_generate_page_survives_a_lost_device(browser, server):
    page = open_engine_page(browser, server.url, "/").page
    page.set_default_timeout(120_000)
    page.wait_for_function("document.body.dataset.model === 'default'")
    page.fill("#prompt", "def f(x):")
    page.fill("#max-new", "4000")
    page.click("#generate-btn")
    page.wait_for_function("document.getElementById('gen-stats').textContent.includes('tokens')")
    lose_device(page)                                     # mid-generation
    page.wait_for_function("document.body.dataset.gpu === 'restored'")
    page.wait_for_function("document.body.dataset.model === 'default'")
    err = page.inner_text("#gen-error")
    assert "GPU device was lost" in err and "reloaded the model" in err, err
    assert "Traceback" not in err
    # the new device generates: same page, no reload
    n = int(page.evaluate("document.body.dataset.generations || '0'"))
    page.fill("#max-new", "8")
    page.check("#greedy")
    page.click("#generate-btn")
    page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}")
    assert page.inner_text("#gen-error") == ""
    assert "8 tokens" in page.inner_text("#gen-stats")
    page.close()


# The engine's books: live GPU buffers and bytes, the pool's buffers in use and free, and
# the distinct buffers the loaded model holds (what unloading it would give back).
BOOKS = """from py_engine.app import generate_session as G
m = G.current['model']
held = {} if m is None else {id(t.buffer): t.buffer.size for t in m.weights.values()
                             if t.pooled and t.buffer is not None}
s = device.stats()
result = {'live': [s['live_buffers'], s['live_bytes']], 'in_use': s['pool']['in_use'],
          'free': s['pool']['free'], 'held': [len(held), sum(held.values())]}"""
OOM_ADVICE = "use a smaller weight format such as q4, a smaller model, or close other tabs that use the GPU"


def _run(page, code):
    return page.evaluate("(c) => window.engine.run(c, {})", code)


def _click_load(page):
    n = int(page.evaluate("+(document.body.dataset.loads || 0)"))
    page.click("#load-btn")
    page.wait_for_function(f"+(document.body.dataset.loads || 0) > {n}")


def _assert_out_of_memory_shown(page):
    err = page.inner_text("#model-error .error-sentence")     # the raw details stay folded
    assert err.startswith("Could not load mamba-d40-tied: the GPU ran out of memory loading the "
                          "weights of "), err
    assert "MB on the GPU as f32)" in err and err.endswith(OOM_ADVICE + "."), err
    assert "Traceback" not in err and "GPUOutOfMemory" not in err and "validation" not in err
    # nothing is loaded, and the page says so: the previous model was dropped to make room
    assert page.evaluate("document.body.dataset.model") is None
    assert page.inner_text("#model-info") == "No model loaded."
    assert page.is_hidden("#model-facts")
    assert page.is_disabled("#generate-btn")


def test_generate_page_out_of_memory_on_load_says_so_and_leaves_nothing(browser, server):
    """A load that runs out of GPU memory (the allocation hook, part-way through the weights)
    after another model was loaded: the page shows one sentence with what to do, says no model
    is loaded (the load dropped the previous one first, to make room), the GPU holds exactly
    what it held before less that previous model, a second attempt from there leaves the
    books unchanged, and the same model loads with the hook cleared: no page reload."""
    page = open_engine_page(browser, server.url, "/").page
    page.set_default_timeout(120_000)
    page.wait_for_function("document.body.dataset.model === 'default'")
    page.select_option("#model-select", "mamba-d40-tied")
    # the format plan of the chosen model is read first (headers only): let it finish
    page.wait_for_function("document.querySelector('#weights-format option').dataset.gpuBytes !== undefined")
    emptied = page.evaluate("window.engine.call({op: 'debugEmptyPool'})")
    assert emptied["stats"]["pool"]["free"] == 0
    before = _run(page, BOOKS)
    assert before["free"] == 0 and before["in_use"] == before["held"][0] > 0, before

    _run(page, "device.fail_allocations_over = 20_000")    # bytes of new buffers, then out of memory
    _click_load(page)
    _assert_out_of_memory_shown(page)
    after = _run(page, BOOKS)
    assert after["live"] == [before["live"][0] - before["held"][0],
                             before["live"][1] - before["held"][1]], (before, after)
    assert after["in_use"] == 0 and after["free"] == 0 and after["held"] == [0, 0], after

    # again, from nothing loaded: the books come back to exactly their values
    _run(page, "device.fail_allocations_over = 20_000")
    _click_load(page)
    _assert_out_of_memory_shown(page)
    assert _run(page, BOOKS) == after

    # the memory is there again: the same model loads and runs, in the same page
    _run(page, "device.fail_allocations_over = None")
    _click_load(page)
    page.wait_for_function("document.body.dataset.model === 'mamba-d40-tied'")
    assert page.inner_text("#model-error") == ""
    assert page.inner_text("#model-info").startswith("mamba-d40-tied: mamba, 2 layers")
    assert page.get_attribute("#model-facts", "data-name") == "mamba-d40-tied"
    logits = _run(page, "from py_engine.app import generate_session as G\n"
                        "result = len(await G.prompt_logits(ids=[1, 2, 3]))")
    assert logits == 3 * 101 * 4
    page.close()


def _start(page, autosave_every):
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    page.select_option("#size", "tiny")
    page.click("#config-details summary")
    for sel, v in dict(SETTINGS, **{"#autosave_every": autosave_every}).items():
        page.fill(sel, str(v))
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('d_model 32')")
    page.click("#start")


_REFERENCE = {}      # server url -> the uninterrupted curve (the same run for every test here)


def _uninterrupted(browser, server):
    """The same run, never interrupted: its [step, loss] curve (run once per server)."""
    if server.url in _REFERENCE:
        return _REFERENCE[server.url]
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(server.url + "/pretrain")
    _start(page, 0)
    page.wait_for_function("document.body.dataset.train === 'done'")
    curve = page.evaluate(HISTORY)
    ctx.close()
    _REFERENCE[server.url] = curve
    return curve


def test_pretrain_page_survives_a_lost_device_with_the_same_loss_curve(browser, server):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(server.url + "/pretrain")
    _start(page, 3)
    page.wait_for_function("Number(document.body.dataset.step) >= 5")
    lose_device(page)                                     # mid-training
    page.wait_for_function("document.body.dataset.gpu === 'restored'")
    page.wait_for_function("document.body.dataset.train === 'done'")
    resumed_from = int(page.evaluate("document.body.dataset.resumedFrom"))
    assert resumed_from >= 3 and resumed_from % 3 == 0 or resumed_from == 1
    assert "GPU device was lost" in msg(page) and f"autosave at step {resumed_from}" in msg(page)
    curve = page.evaluate(HISTORY)
    ctx.close()
    ref = _uninterrupted(browser, server)
    assert [s for s, _ in curve] == list(range(1, 13))
    assert [s for s, _ in ref] == list(range(1, 13))
    for (s, got), (_, want) in zip(curve, ref):
        assert abs(got - want) <= 1e-5, (s, got, want)


FT_BASE = "bytes-tiny-stdlib"        # a served fixture: Mamba-1, d_model 64, 2 layers, bytes
FT_SETTINGS = {"#lr": "2e-2", "#batch": 2, "#seq_len": 32, "#steps": 9, "#sample_every": 0,
               "#lora-r": 4, "#lora-alpha": 8}


def _lora_run(browser, server, autosave_every, lose_at=None):
    """A LoRA fine-tune of FT_BASE on the sample corpus (the device lost once step `lose_at`
    is reached, when given): its [step, loss] curve and the step it resumed from."""
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(server.url + "/pretrain")
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.check("input[name=what][value=finetune]")
    page.select_option("#ft-model", FT_BASE)
    page.wait_for_function("document.getElementById('ft-summary').textContent.includes('LoRA r 8')")
    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    for sel, v in dict(FT_SETTINGS, **{"#autosave_every": autosave_every}).items():
        page.fill(sel, str(v))
    page.click("#start")
    resumed = None
    if lose_at is not None:
        page.wait_for_function(f"Number(document.body.dataset.step) >= {lose_at}")
        lose_device(page)                                 # mid-fine-tune
        page.wait_for_function("document.body.dataset.gpu === 'restored'")
        assert "GPU device was lost" in msg(page) and "continues from its autosave" in msg(page), \
            msg(page)
        resumed = int(page.evaluate("document.body.dataset.resumedFrom"))
    page.wait_for_function("document.body.dataset.train === 'done'")
    curve = page.evaluate(HISTORY)
    ctx.close()
    return curve, resumed


def test_lora_finetune_survives_a_lost_device_with_the_same_loss_curve(browser, server):
    """A fine-tune used to be resumed through the from-scratch session after a lost device,
    which cannot read a fine-tune's autosave (the adapter and its base): it now continues
    through the fine-tune session, the served base fetched again, the curve as if never
    interrupted."""
    curve, resumed = _lora_run(browser, server, 2, lose_at=4)
    assert resumed >= 2 and (resumed % 2 == 0 or resumed == 1)
    ref, _ = _lora_run(browser, server, 0)
    assert [s for s, _ in curve] == list(range(1, 10)) == [s for s, _ in ref]
    for (s, got), (_, want) in zip(curve, ref):
        assert abs(got - want) <= 1e-5, (s, got, want)


CORRUPT = """async () => {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle('mambaweb-pretrain');
  const info = JSON.parse(await (await (await dir.getFileHandle('info.json')).getFile()).text());
  const handle = await dir.getFileHandle(info.state.file);
  const w = await handle.createWritable({ keepExistingData: true });
  await w.write({ type: 'write', position: 200, data: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) });
  await w.close();
  return [info.state.file, info.state.step, info.previous.step];
}"""


def test_killed_tab_resumes_from_the_autosave_and_a_corrupted_one_is_refused(browser, server):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(server.url + "/pretrain")
    _start(page, 2)
    page.wait_for_function("Number(document.body.dataset.step) >= 6")
    page.close()                                          # the tab is killed mid-training

    # reopened: the run is offered; its current autosave gets corrupted on disk first
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(server.url + "/pretrain")
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.wait_for_selector("#resume-banner:not([hidden])")
    name, step, prev = page.evaluate(CORRUPT)
    assert step >= 2 and prev < step
    page.click("#resume-saved")
    page.wait_for_function("document.body.dataset.train === 'done'")
    text = msg(page)
    assert f"mambaweb-pretrain/{name}" in text and "CRC-32" in text, text
    assert f"step {step} was refused" in text and f"(step {prev})" in text, text
    curve = page.evaluate(HISTORY)
    ctx.close()
    assert [s for s, _ in curve] == list(range(1, 13))
    ref = _uninterrupted(browser, server)
    for (s, got), (_, want) in zip(curve, ref):
        assert abs(got - want) <= 1e-5, (s, got, want)
