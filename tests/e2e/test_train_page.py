"""The train page as a person uses it (issues 16 and 14, page side): a binary corpus is refused
the moment it is chosen; a finished run trains N more steps (same run: the step count and the
curve go on) and downloads as one .zip that transformers loads; after a reload the finished run
opens with its own settings in the form; a LoRA fine-tune of a served model trains in the tab
with a held-out loss, and its adapter .zip loads in PEFT with the tab's logits."""
import json
import zipfile

import numpy as np
import pytest

from tests.conftest import REPO
from tools.headless import open_engine_page

pytestmark = pytest.mark.browser
BASE = "bytes-tiny-stdlib"          # a served fixture: Mamba-1, d_model 64, 2 layers, bytes
PROMPT = list(b"def f(x):\n    return")


def fill(page, values):
    for sel, v in values.items():
        page.fill(sel, str(v))


def msg(page):
    return page.inner_text("#message") if page.is_visible("#message") else ""


def open_page(browser, server):
    page = open_engine_page(browser, server.url, "/pretrain")
    page.page.set_default_timeout(120_000)
    page.page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    return page


def download(page, which, tmp_path):
    """Click a download button; the one file it gives, saved under tmp_path."""
    with page.expect_download() as dl:
        page.click(f"#dl-{which}")
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    page.wait_for_function(f"document.body.dataset.downloaded === '{which}'")
    return path


def unzip(path, dest):
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None          # every entry's CRC checks out
        z.extractall(dest)
        tops = {n.split("/")[0] for n in z.namelist()}
    assert len(tops) == 1, tops             # one folder inside
    return dest / tops.pop()


def test_a_binary_corpus_is_refused_when_chosen(browser, server, tmp_path):
    handle = open_page(browser, server)
    page = handle.page
    try:
        blob = tmp_path / "weights.txt"          # a text name, binary contents
        blob.write_bytes(bytes(range(256)) * 8)
        page.set_input_files("#file-input", str(blob))
        page.wait_for_function("document.body.dataset.corpus === 'refused'")
        text = msg(page)
        assert text.startswith("That corpus cannot be used:") and "weights.txt: binary" in text
        assert "Traceback" not in text and text.count("\n") == 0
        assert page.inner_text("#corpus-summary") == "No corpus chosen yet."
        # a mix: the text file is kept, the bad one named with how much was wrong
        good = tmp_path / "notes.txt"
        good.write_text("def f(x):\n    return x + 1\n" * 50)
        latin = tmp_path / "latin1.txt"
        latin.write_bytes("café ".encode("latin-1") * 40)
        page.set_input_files("#file-input", [str(good), str(blob), str(latin)])
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        assert "(2 files skipped)" in page.inner_text("#corpus-summary")
        note = msg(page)
        assert "skipped 2 corpus files" in note and "weights.txt: binary" in note
        assert "latin1.txt: not UTF-8 text (40 invalid UTF-8 sequences" in note
    finally:
        page.close()


def test_finished_run_trains_more_steps_zips_and_reopens_with_its_settings(browser, server, tmp_path):
    handle = open_page(browser, server)
    page = handle.page
    try:
        assert page.is_hidden("#more-row") and page.is_disabled("#resume")
        page.click("#use-sample")
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        page.select_option("#size", "tiny")
        page.click("#config-details summary")
        fill(page, {"#cfg-hidden_size": 32, "#lr": "5e-3", "#batch": 2, "#seq_len": 16,
                    "#steps": 3, "#sample_every": 0, "#autosave_every": 1})
        page.click("#start")
        page.wait_for_function("document.body.dataset.train === 'done'")
        assert page.inner_text("#run-status") == "Finished"
        assert page.is_disabled("#resume")           # nothing to resume in a finished run
        assert page.is_visible("#more-row")

        # train 2 more steps: the same run goes on (step count, curve, progress bar)
        page.fill("#more-steps", "2")
        page.click("#more")
        page.wait_for_function("document.body.dataset.step === '5' && document.body.dataset.train === 'done'")
        assert page.evaluate("Number(document.getElementById('loss-plot').dataset.points)") == 5
        assert page.inner_text("#stat-step") == "5 / 5"
        assert page.input_value("#steps") == "5"
        assert "at step 5 of 5, from" in page.inner_text("#loss-summary")

        # the HF download is one .zip with the three files, and transformers loads it
        folder = unzip(download(page, "hf", tmp_path), tmp_path / "unzipped")
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                            "tokenizer.json"]
        assert json.loads((folder / "config.json").read_text())["hidden_size"] == 32
        import torch
        import transformers
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        tab = np.frombuffer(handle.run(
            "from py_engine.train import session as S\n"
            "result = await S.current.model.logits(args['ids'])", ids=PROMPT), np.float32)
        with torch.no_grad():
            ref = model(torch.tensor([PROMPT])).logits[0].numpy()
        assert np.abs(tab.reshape(ref.shape) - ref).max() <= 1e-4

        # a reload: the finished run is opened (not "resumed"), the form shows its settings
        page.reload()
        page.wait_for_function("document.body.dataset.pretrain === 'ready'")
        page.wait_for_selector("#resume-banner:not([hidden])")
        assert page.inner_text("#resume-text").startswith("A finished run saved in this browser")
        assert "step 5 of 5" in page.inner_text("#resume-text")
        assert page.inner_text("#resume-saved") == "Open it"
        page.click("#resume-saved")
        page.wait_for_function("document.body.dataset.runShown !== undefined && document.body.dataset.train === 'done'")
        form = {k: page.input_value(f"#{k}") for k in ("steps", "batch", "seq_len", "lr",
                                                        "cfg-hidden_size")}
        assert form == {"steps": "5", "batch": "2", "seq_len": "16", "lr": "0.005",
                        "cfg-hidden_size": "32"}
        assert page.input_value("#family") == "mamba1" and page.input_value("#size") == "tiny"
        assert page.inner_text("#corpus-summary").startswith("Sample corpus")
        assert page.evaluate("Number(document.getElementById('loss-plot').dataset.points)") == 5
        assert page.is_visible("#more-row") and page.is_disabled("#resume")
    finally:
        page.close()


def test_lora_finetune_in_the_tab_loads_in_peft(browser, server, tmp_path):
    handle = open_page(browser, server)
    page = handle.page
    try:
        page.check("input[name=what][value=finetune]")
        page.select_option("#ft-model", BASE)
        page.wait_for_function("document.getElementById('ft-summary').textContent.includes('LoRA r 8')")
        summary = page.inner_text("#ft-summary")
        assert "LoRA saves" in summary and "a full fine-tune needs" in summary
        page.click("#use-sample")
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        fill(page, {"#lr": "2e-2", "#batch": 2, "#seq_len": 32, "#steps": 4, "#sample_every": 2,
                    "#autosave_every": 1, "#lora-r": 4, "#lora-alpha": 8})
        page.click("#start")
        page.wait_for_function("document.body.dataset.train === 'done'")
        curve = handle.run("from py_engine.train import session as S\n"
                           "result = {'history': S.current.history, 'evals': S.current.evals,"
                           " 'trained': S.current.summary()['trained_params']}")
        loss = [v for _, v in curve["history"]]
        assert len(loss) == 4 and all(np.isfinite(loss))
        assert min(loss[2:]) < loss[0]                       # falling-ish
        evals = curve["evals"]                               # before step 1, at 2 and at 4
        assert [s for s, _ in evals] == [0, 2, 4] and all(np.isfinite([v for _, v in evals]))
        assert page.is_visible("#stat-eval-box") and page.inner_text("#stat-eval") != "–"
        assert page.is_visible("#dl-adapter") and page.is_hidden("#dl-hf")

        folder = unzip(download(page, "adapter", tmp_path), tmp_path / "adapter")
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json",
                                                            "adapter_model.safetensors"]
        conf = json.loads((folder / "adapter_config.json").read_text())
        assert conf["r"] == 4 and conf["lora_alpha"] == 8 and conf["peft_type"] == "LORA"
        import torch
        import transformers
        from peft import PeftModel
        base_dir = REPO / "tests" / "fixtures" / "models" / BASE
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        with torch.no_grad():
            plain = base(torch.tensor([PROMPT])).logits[0].numpy()
        peft_model = PeftModel.from_pretrained(base, folder).eval()
        assert sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n) == curve["trained"]
        tab = np.frombuffer(handle.run(
            "from py_engine.train import session as S\n"
            "result = await S.current.model.logits(args['ids'])", ids=PROMPT), np.float32)
        with torch.no_grad():
            ref = peft_model(torch.tensor([PROMPT])).logits[0].numpy()
        tab = tab.reshape(ref.shape)
        assert np.abs(tab - ref).max() <= 1e-4
        assert np.abs(tab - plain).max() > 1e-3          # the adapter trained: it matters

        # the merged model (base + adapter) is one HF .zip with the same logits
        merged = unzip(download(page, "merged", tmp_path), tmp_path / "merged")
        mm = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        with torch.no_grad():
            assert np.abs(mm(torch.tensor([PROMPT])).logits[0].numpy() - tab).max() <= 1e-4

        # a reload reopens the fine-tune (base from the server, adapter and moments from the
        # autosave) with its settings in the form; 2 more steps extend it
        page.reload()
        page.wait_for_function("document.body.dataset.pretrain === 'ready'")
        page.wait_for_selector("#resume-banner:not([hidden])")
        assert f"a LoRA fine-tune of {BASE}" in page.inner_text("#resume-text")
        page.click("#resume-saved")
        page.wait_for_function("document.body.dataset.runShown !== undefined && document.body.dataset.train === 'done'")
        assert page.is_checked("input[name=what][value=finetune]")
        assert page.is_checked("input[name=ft-mode][value=lora]")
        assert (page.input_value("#lora-r"), page.input_value("#lora-alpha")) == ("4", "8")
        assert page.input_value("#ft-model") == BASE and page.input_value("#steps") == "4"
        again = np.frombuffer(handle.run(
            "from py_engine.train import session as S\n"
            "result = await S.current.model.logits(args['ids'])", ids=PROMPT), np.float32)
        assert np.abs(again.reshape(tab.shape) - tab).max() <= 1e-5
        assert page.evaluate("Number(document.getElementById('loss-plot').dataset.points)") == 4
        page.fill("#more-steps", "2")
        page.click("#more")
        page.wait_for_function("document.body.dataset.step === '6' && document.body.dataset.train === 'done'")
        assert page.evaluate("Number(document.getElementById('loss-plot').dataset.points)") == 6
        assert "Held-out loss" in page.inner_text("#loss-summary")
    finally:
        page.close()
