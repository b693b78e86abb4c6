"""A LoRA fine-tune of a model folder from this computer resumes after the tab is closed
(issue 14), both ways the page can get the folder back:
  - no directory handle (the <input webkitdirectory>, or a browser without the File System
    Access API: showDirectoryPicker is removed here): the reopened page says the folder must be
    opened again, Resume asks for it, a folder with other weights is refused in one sentence
    naming what differs and the autosave stays, then the same folder resumes the run;
  - a FileSystemDirectoryHandle (showDirectoryPicker is stubbed to hand out an origin-private
    folder, since Playwright cannot click the native picker): the page keeps it in IndexedDB,
    and after the reload Resume reads the folder through it again, with no picker; a folder
    changed on disk since is refused through the handle the same way.
Either way the resumed run ends, bit for bit, with the loss curve, held-out losses, step,
data position, adapter weights and AdamW moments of the same run never interrupted; so does a
run whose GPU device is lost mid-way (the page still holds the folder: no question asked)."""
import base64
import shutil
import struct

import numpy as np
import pytest

from tests.conftest import REPO
from tools.headless import EngineHandle

pytestmark = pytest.mark.browser
TINY = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"
SETTINGS = {"#lr": "2e-2", "#batch": 2, "#seq_len": 32, "#steps": 8, "#sample_every": 0,
            "#lora-r": 4, "#lora-alpha": 8}
NO_PICKER = "Object.defineProperty(window, 'showDirectoryPicker', {value: undefined, configurable: true});"
# showDirectoryPicker stubbed: the OPFS folder 'picked-base' (a real FileSystemDirectoryHandle)
OPFS_PICKER = """
window.__pickerCalls = 0;
Object.defineProperty(window, 'showDirectoryPicker', {configurable: true, value: async () => {
  window.__pickerCalls += 1;
  return (await navigator.storage.getDirectory()).getDirectoryHandle('picked-base');
}});"""
WRITE_OPFS = """async ([folder, files]) => {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle(folder, {create: true});
  for (const [name, b64] of Object.entries(files)) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const w = await (await dir.getFileHandle(name, {create: true})).createWritable();
    await w.write(bytes);
    await w.close();
  }
  return true;
}"""
STATE = """
from py_engine.train import session as S
c = S.current
opt = c.trainer.opt
result = {'history': c.history, 'evals': c.evals, 'step': c.step, 'adam_t': opt.t,
          'position': c.batcher.position, 'base': c.base['name'],
          'adapter': {n: await t.to_bytes() for n, t in c.adapter.params().items()},
          'm': {n: await t.to_bytes() for n, t in opt.m.items()},
          'v': {n: await t.to_bytes() for n, t in opt.v.items()}}"""
SAVED = "from py_engine.train import session as S\nresult = await S.saved_info()"


def other_weights(folder):
    """The base's layout with other values (another checkpoint of the same model)."""
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[start:] = (np.frombuffer(bytes(raw[start:]), np.float32) * np.float32(0.99)).tobytes()
    path.write_bytes(bytes(raw))
    return folder


def msg(page):
    return page.inner_text("#message") if page.is_visible("#message") else ""


def open_page(ctx, server):
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.on("dialog", lambda d: d.accept())
    page.goto(server.url + "/pretrain")
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    return EngineHandle(page, None, [])


def start_finetune(page, pick, autosave_every):
    """Fine-tune tab, the base folder chosen by `pick(page)`, the sample corpus, Start."""
    page.check("input[name=what][value=finetune]")
    name = pick(page)
    page.wait_for_function("(n) => document.body.dataset.ftFolder === n", arg=name)
    assert page.input_value("#ft-model") == "@folder"
    page.wait_for_function("document.getElementById('ft-summary').textContent.includes('LoRA r')")
    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    for sel, v in dict(SETTINGS, **{"#autosave_every": autosave_every}).items():
        page.fill(sel, str(v))
    page.evaluate("delete document.body.dataset.train")
    page.click("#start")


def input_folder(folder):
    def pick(page):
        page.set_input_files("#ft-folder", str(folder))
        return folder.name
    return pick


def kill_mid_run(handle, at_least=5):
    handle.page.wait_for_function(f"Number(document.body.dataset.step) >= {at_least}")
    handle.page.close()                     # the tab is closed mid-training


def assert_same_run(got, want):
    """Bit for bit: the same kernels on the same (software) GPU, the same numbers in order."""
    assert got["step"] == want["step"] == 8 and got["adam_t"] == want["adam_t"] == 8
    assert got["position"] == want["position"]
    assert [s for s, _ in got["history"]] == list(range(1, 9))
    assert [s for s, _ in got["evals"]] == [s for s, _ in want["evals"]] == [0, 8]
    assert got["history"] == want["history"] and got["evals"] == want["evals"]
    for part in ("adapter", "m", "v"):
        assert sorted(got[part]) == sorted(want[part]) and got[part], part
        for name, raw in want[part].items():
            assert got[part][name] == raw, (part, name)
    trained = [np.frombuffer(v, np.float32) for n, v in got["adapter"].items() if "lora_B" in n]
    assert trained and all(np.abs(x).max() > 0 for x in trained)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("local-bases")
    mine = root / "my-base"
    shutil.copytree(TINY, mine)
    other = root / "other-base"
    shutil.copytree(TINY, other)
    return mine, other_weights(other)


@pytest.fixture(scope="module")
def uninterrupted(browser, server, folders):
    """The same fine-tune of the same folder, never interrupted: its final state."""
    ctx = browser.new_context()
    try:
        handle = open_page(ctx, server)
        start_finetune(handle.page, input_folder(folders[0]), 0)
        handle.page.wait_for_function("document.body.dataset.train === 'done'")
        return handle.run(STATE)
    finally:
        ctx.close()


def test_reopening_the_same_folder_resumes_and_another_is_refused(browser, server, folders,
                                                                 uninterrupted):
    mine, other = folders
    ctx = browser.new_context()
    ctx.add_init_script(NO_PICKER)
    try:
        handle = open_page(ctx, server)
        start_finetune(handle.page, input_folder(mine), 2)
        kill_mid_run(handle)

        handle = open_page(ctx, server)
        page = handle.page
        page.wait_for_selector("#resume-banner:not([hidden])")
        text = page.inner_text("#resume-text")
        assert "a LoRA fine-tune of my-base" in text, text
        assert text.endswith("Its base is the folder my-base from this computer: resuming asks "
                             "you to open that folder again."), text
        saved = handle.run(SAVED)
        assert 2 <= saved["step"] < 8 and saved["base"]["url"] is None      # mid-run

        # another folder (same layout, other weights): one sentence, nothing changes
        with page.expect_file_chooser() as chooser:
            page.click("#resume-saved")
        chooser.value.set_files(str(other))
        page.wait_for_function("document.body.dataset.resumeRefused === '1'")
        assert msg(page) == (
            "Could not resume the saved run: the folder other-base is not the base this run was "
            "trained on (my-base): its model.safetensors has the same tensors with other values "
            "(the weights differ from the run's base: another checkpoint of the same model?); "
            "open that folder again, or discard the saved run, which is kept until then.")
        assert page.is_visible("#resume-banner") and page.inner_text("#run-status") == "Ready"
        assert handle.run(SAVED) == saved                 # the autosave is as it was

        # the same folder: the run goes on from its autosave to the end
        with page.expect_file_chooser() as chooser:
            page.click("#resume-saved")
        chooser.value.set_files(str(mine))
        page.wait_for_function("document.body.dataset.runShown !== undefined && "
                               "document.body.dataset.train === 'done'")
        assert page.is_hidden("#resume-banner")
        assert page.input_value("#ft-model") == "@folder"
        assert page.is_checked("input[name=ft-mode][value=lora]")
        assert_same_run(handle.run(STATE), uninterrupted)
    finally:
        ctx.close()


def test_a_kept_folder_handle_resumes_without_asking(browser, server, folders, uninterrupted):
    mine, _ = folders
    files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in sorted(mine.iterdir())}
    ctx = browser.new_context()
    ctx.add_init_script(OPFS_PICKER)
    try:
        handle = open_page(ctx, server)
        page = handle.page
        assert page.evaluate(WRITE_OPFS, ["picked-base", files])

        def pick(page):
            page.click("#ft-pick-folder")               # the (stubbed) directory picker
            return "picked-base"
        start_finetune(page, pick, 2)
        page.wait_for_function("document.body.dataset.keptHandle === 'picked-base'")
        kill_mid_run(handle)

        # the folder changed on disk since: refused through the kept handle, no picker
        handle = open_page(ctx, server)
        page = handle.page
        page.wait_for_selector("#resume-banner:not([hidden])")
        assert page.inner_text("#resume-text").endswith(
            "Its base is the folder picked-base from this computer: resuming asks to read it "
            "again.")
        saved = handle.run(SAVED)
        assert 2 <= saved["step"] < 8
        changed = other_weights(shutil.copytree(mine, mine.parent / "changed-base"))
        assert page.evaluate(WRITE_OPFS, ["picked-base", {
            "model.safetensors": base64.b64encode((changed / "model.safetensors").read_bytes()).decode()}])
        page.click("#resume-saved")
        page.wait_for_function("document.body.dataset.resumeRefused === '1'")
        assert msg(page).startswith("Could not resume the saved run: the folder picked-base is "
                                    "not the base this run was trained on (picked-base): its "
                                    "model.safetensors has the same tensors with other values")
        assert page.evaluate("window.__pickerCalls") == 0
        assert handle.run(SAVED) == saved

        # put back as it was: a reload, Resume, and the handle reads it again
        assert page.evaluate(WRITE_OPFS, ["picked-base", files])
        page.close()
        handle = open_page(ctx, server)
        page = handle.page
        page.wait_for_selector("#resume-banner:not([hidden])")
        page.click("#resume-saved")
        page.wait_for_function("document.body.dataset.runShown !== undefined && "
                               "document.body.dataset.train === 'done'")
        assert page.evaluate("window.__pickerCalls") == 0
        assert page.input_value("#ft-model") == "@folder"
        assert_same_run(handle.run(STATE), uninterrupted)
    finally:
        ctx.close()


def test_a_lost_device_resumes_through_the_same_folder(browser, server, folders, uninterrupted):
    """The GPU device is lost mid-run (the Worker's test hook destroys it): the page hands the
    folder it still holds to the fine-tune session, which checks it is the run's base and goes
    on from the autosave, with no question to the person; the same run, bit for bit."""
    mine, _ = folders
    ctx = browser.new_context()
    ctx.add_init_script(NO_PICKER)
    try:
        handle = open_page(ctx, server)
        page = handle.page
        start_finetune(page, input_folder(mine), 2)
        page.wait_for_function("Number(document.body.dataset.step) >= 4")
        assert page.evaluate("window.engine.call({op: 'debugLoseDevice'})") is True
        page.wait_for_function("document.body.dataset.gpu === 'restored'")
        assert "continues from its autosave" in msg(page), msg(page)
        page.wait_for_function("document.body.dataset.train === 'done'")
        assert 2 <= int(page.evaluate("document.body.dataset.resumedFrom")) < 8
        assert page.input_value("#ft-model") == "@folder"
        assert_same_run(handle.run(STATE), uninterrupted)
    finally:
        ctx.close()
