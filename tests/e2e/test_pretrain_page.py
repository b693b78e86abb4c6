"""The pretrain page as a person uses it: pick the sample corpus, a tiny model, Start; watch
the loss curve, samples and progress; download the model (loads in transformers) and the
training state; pause, reload the tab, and resume the autosaved run where it stopped."""
import json

import numpy as np
import pytest

from tools.headless import open_engine_page

pytestmark = pytest.mark.browser


def fill(page, values):
    for sel, v in values.items():
        page.fill(sel, str(v))


def msg(page):
    return page.inner_text("#message") if page.is_visible("#message") else ""


def clicked_download(page, which):
    """Click #dl-<which> and return the one download it starts. Waiting for the browser's own
    download event (not the page's `downloaded` flag, set as the link is clicked, plus a fixed
    pause) is what makes the file certain to be there on a slow machine."""
    with page.expect_download() as dl:
        page.click(f"#dl-{which}")
    page.wait_for_function(f"document.body.dataset.downloaded === '{which}'")
    return dl.value


def unzip_model(download, tmp_path):
    """The HF download: one .zip holding mambaweb-model/{config.json, model.safetensors,
    tokenizer.json}; extracted, its folder."""
    import zipfile
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [f"mambaweb-model/{n}" for n in
                                        ("config.json", "model.safetensors", "tokenizer.json")]
        z.extractall(tmp_path)
    return tmp_path / "mambaweb-model"


def test_pretrain_page_trains_downloads_and_resumes(browser, server, tmp_path):
    handle = open_engine_page(browser, server.url, "/pretrain")
    page = handle.page
    page.set_default_timeout(90_000)
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    # parameter counts are shown for each preset
    assert "M params" in page.inner_text("#size")
    assert "parameters" in page.inner_text("#model-summary")

    # user errors: no corpus; a broken tokenizer.json (nothing chosen so far is lost)
    page.click("#start")
    assert "No corpus" in msg(page)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": ')
    page.set_input_files("#tok-file", str(bad))
    page.wait_for_function("document.getElementById('message').textContent.includes('cannot be used')")
    assert page.is_checked("input[name=tok][value=byte]")

    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    assert "Sample corpus" in page.inner_text("#corpus-summary")
    page.select_option("#size", "tiny")
    page.click("#config-details summary")
    fill(page, {"#cfg-hidden_size": 32, "#lr": "5e-3", "#batch": 2, "#seq_len": 32,
                "#steps": 14, "#sample_every": 4, "#autosave_every": 3})
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('d_model 32')")
    page.click("#start")
    page.wait_for_function("Number(document.getElementById('loss-plot').dataset.points) >= 5")
    assert page.inner_text("#stat-tps") not in ("", "–")
    page.wait_for_selector("#samples pre")
    page.click("#pause")
    page.wait_for_function("document.body.dataset.train === 'paused'")
    paused_at = int(page.evaluate("document.body.dataset.step"))
    assert 5 <= paused_at < 14
    first_losses = page.evaluate("Number(document.getElementById('stat-loss').textContent)")
    assert first_losses > 0

    # downloads: the HF folder (one .zip of three files) and the training state
    hf = clicked_download(page, "hf")
    assert hf.suggested_filename == "mambaweb-model.zip"
    folder = unzip_model(hf, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["hidden_size"] == 32 and cfg["vocab_size"] == 256
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(torch.tensor([list(b"def f(x):")]), labels=torch.tensor([list(b"def f(x):")]))
    assert np.isfinite(out.loss.item())
    assert clicked_download(page, "state").suggested_filename == "training_state.safetensors"

    # reload the tab: the autosaved run is offered and resumes at the step it paused at
    page.reload()
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.wait_for_selector("#resume-banner:not([hidden])")
    assert f"step {paused_at} of 14" in page.inner_text("#resume-text")
    page.click("#resume-saved")
    page.wait_for_function("document.body.dataset.runShown !== undefined")
    # the form shows the resumed run, not the defaults
    assert page.input_value("#steps") == "14" and page.input_value("#seq_len") == "32"
    assert page.input_value("#cfg-hidden_size") == "32" and page.input_value("#lr") == "0.005"
    assert page.inner_text("#corpus-summary").startswith("Sample corpus")
    page.wait_for_function("document.body.dataset.train === 'done'")
    assert int(page.evaluate("document.body.dataset.step")) == 14
    points = page.evaluate("Number(document.getElementById('loss-plot').dataset.points)")
    assert points == 14          # the curve before the reload came back with the state
    assert msg(page) == "" or "warning" not in msg(page).lower()
    page.close()


def test_pretrain_page_trains_a_hybrid_chosen_from_the_page(browser, server, tmp_path):
    """The architecture chooser: a hybrid with a layer pattern trains and downloads as a
    NemotronH that transformers loads; switching to Mamba-2 updates the summary."""
    handle = open_engine_page(browser, server.url, "/pretrain")
    page = handle.page
    page.set_default_timeout(90_000)
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    assert page.is_hidden("#pattern-label")
    page.select_option("#family", "mamba2")
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('Mamba-2')")
    page.select_option("#family", "mamba3")
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('Mamba-3')")
    page.select_option("#family", "hybrid")
    page.wait_for_selector("#pattern-label", state="visible")
    page.fill("#pattern", "M*-M")
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('hybrid M*-M')")
    page.fill("#pattern", "MxM")
    page.wait_for_function("document.getElementById('fit-problems').textContent.includes('unknown layer letters')")
    page.fill("#pattern", "M*-M")
    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    page.select_option("#size", "tiny")
    page.click("#config-details summary")
    fill(page, {"#cfg-hidden_size": 32, "#lr": "1e-2", "#batch": 2, "#seq_len": 32, "#steps": 6,
                "#sample_every": 3, "#autosave_every": 0})
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('d_model 32')")
    page.click("#start")
    page.wait_for_function("document.body.dataset.train === 'done'")
    page.wait_for_selector("#samples pre")      # samples come through the one decode path
    folder = unzip_model(clicked_download(page, "hf"), tmp_path)
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert type(model).__name__ == "NemotronHForCausalLM"
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([list(b"def f(x):")])).logits).all()
    page.close()


def test_reload_mid_training_with_default_settings_resumes(browser, server):
    """Issue: with the defaults (autosave every 50 steps) a reload at step 8 of 30 lost the run.
    Now the engine also autosaves after step 1, every 30 s and when the page is hidden or left.
    The autosave settings stay the defaults; the model is the tiny one (the default size took a
    minute of CI for 5 steps), and its non-default batch and context must come back too."""
    handle = open_engine_page(browser, server.url, "/pretrain")
    page = handle.page
    page.set_default_timeout(120_000)
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.click("#use-sample")
    page.wait_for_function("document.body.dataset.corpus === 'ready'")
    page.select_option("#size", "tiny")
    page.click("#config-details summary")
    fill(page, {"#cfg-hidden_size": 32, "#batch": 2, "#seq_len": 32, "#steps": 40})
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('d_model 32')")
    page.click("#start")
    page.wait_for_function("Number(document.body.dataset.step) >= 2")
    # the save after step 1 (or a later one) has landed; the default every-50-steps had none
    page.wait_for_function("document.getElementById('stat-saved').textContent.includes('autosaved')")
    page.reload()
    page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    page.wait_for_selector("#resume-banner:not([hidden])")
    text = page.inner_text("#resume-text")
    saved_at = int(text.split("step ")[1].split(" of")[0])
    assert 1 <= saved_at < 40 and "of 40" in text
    page.click("#resume-saved")
    page.wait_for_function("document.body.dataset.runShown !== undefined")
    assert page.input_value("#steps") == "40" and page.input_value("#batch") == "2"
    assert page.input_value("#seq_len") == "32"
    assert page.inner_text("#corpus-summary").startswith("Sample corpus")
    page.wait_for_function("document.body.dataset.train === 'done'")
    assert int(page.evaluate("document.body.dataset.step")) == 40
    page.close()
