"""QLoRA and LoRA target modules on the train page, as a person uses them (issue 14): fine-tune
mode offers the base's GPU weight format and the model's linear layers as targets, and the
memory estimate follows both; full fine-tuning refuses a q4 base in one sentence; a LoRA run on
a q4 base trains with finite losses, its adapter .zip loads in PEFT, and a reload reopens it on
its q4 base with its targets ticked.

Bounds (why they hold):
  - The tab's logits equal PEFT's on the base whose narrowed matrices are replaced by their q4
    values (tests/reference/weight_format_numpy.roundtrip: the exact numbers the GPU holds) to
    <= 1e-4, the engine's usual f32 parity tolerance: same weights, same adapter, only the order
    of f32 sums differs.
  - On the plain f32 base PEFT's logits differ from the tab's by the 4-bit rounding of the base
    alone, so |tab - PEFT(f32 base)| <= E + 1e-4 with E = max|PEFT(q4 base) - PEFT(f32 base)|,
    measured in torch (triangle inequality with the bound above). q4 rounds each weight to one
    of 16 levels of its group of 32 (error up to 1/16 of the group's largest magnitude); on
    this 2-layer d_model-64 fixture that moves the logits by ~10% of their spread (rms; E ~2.0
    on a 25-wide range). So that "close" means close, the rms of that shift is asserted below
    20% of the logits' standard deviation and nonzero (the base really is 4-bit).
"""
import json
import zipfile

import numpy as np
import pytest

from tests.conftest import REPO
from tests.reference.weight_format_numpy import roundtrip
from tools.headless import open_engine_page

pytestmark = pytest.mark.browser
BASE = "bytes-tiny-stdlib"          # a served fixture: Mamba-1, d_model 64, 2 layers, bytes
PROMPT = list(b"def f(x):\n    return")
TAB_LOGITS = ("from py_engine.train import session as S\n"
              "result = await S.current.model.logits(args['ids'])")


def open_page(browser, server):
    page = open_engine_page(browser, server.url, "/pretrain")
    page.page.set_default_timeout(120_000)
    page.page.wait_for_function("document.body.dataset.pretrain === 'ready'")
    return page


def described(page, text):
    """Wait until the fine-tune summary (debounced) says `text`; return the page's estimate."""
    page.wait_for_function("document.body.dataset.described === 'fresh' && document."
                           f"getElementById('ft-summary').textContent.includes({text!r})")
    return {k: int(page.evaluate(f"document.body.dataset.{k}")) for k in ("ftMemory", "ftTrained")}


def ticked(page):
    return page.eval_on_selector_all("#lora-target-boxes input:checked", "els => els.map(e => e.value)")


def test_qlora_on_a_q4_base_with_chosen_targets_loads_in_peft(browser, server, tmp_path):
    handle = open_page(browser, server)
    page = handle.page
    try:
        page.check("input[name=what][value=finetune]")
        page.select_option("#ft-model", BASE)
        f32 = described(page, "LoRA r 8")
        # the model's linear layers, the default (in_proj) ticked
        boxes = page.eval_on_selector_all("#lora-target-boxes input", "els => els.map(e => e.value)")
        assert boxes == ["in_proj", "x_proj", "dt_proj", "out_proj"]
        assert ticked(page) == ["in_proj"]

        page.fill("#lora-r", "4")
        page.fill("#lora-alpha", "8")
        page.dispatch_event("#lora-alpha", "change")
        # r (in + out) per adapted matrix and layer: in_proj [256, 64], x_proj [4 + 2*16, 128]
        in_proj, x_proj = 2 * 4 * (64 + 256), 2 * 4 * (128 + 36)
        page.wait_for_function(f"document.body.dataset.ftTrained === '{in_proj}'")
        page.check("#lora-target-boxes input[value=x_proj]")
        page.wait_for_function(f"document.body.dataset.ftTrained === '{in_proj + x_proj}'")
        f32 = described(page, "LoRA r 4")
        page.select_option("#ft-weights", "q4")
        q4 = described(page, "on a q4 base")
        assert "QLoRA r 4" in page.inner_text("#ft-summary")
        assert q4["ftTrained"] == f32["ftTrained"] and q4["ftMemory"] < f32["ftMemory"]

        assert_accessible(page)

        # a full fine-tune cannot train a frozen 4-bit base: one sentence, before and at Start
        page.check("input[name=ft-mode][value=full]")
        refusal = ("A q4 base stays frozen and narrow, and a full fine-tune trains every weight: "
                   "choose LoRA (QLoRA on q4) or f32 weights.")
        page.wait_for_function(f"document.getElementById('ft-problem').textContent === {refusal!r}")
        page.click("#use-sample")
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        page.fill("#lr", "2e-2")
        page.click("#start")
        page.wait_for_selector("#message:not([hidden])")
        assert page.inner_text("#message") == refusal[0].lower() + refusal[1:-1]
        assert page.inner_text("#run-status") == "Ready"

        page.check("input[name=ft-mode][value=lora]")
        page.wait_for_function("document.getElementById('ft-problem').textContent === ''")
        assert ticked(page) == ["in_proj", "x_proj"]          # the choice survives a mode flip
        for sel, v in {"#batch": 2, "#seq_len": 32, "#steps": 3, "#sample_every": 3,
                       "#autosave_every": 1}.items():
            page.fill(sel, str(v))
        page.click("#start")
        page.wait_for_function("document.body.dataset.train === 'done'")
        run = handle.run(
            "from py_engine.train import session as S\n"
            "from py_engine.app import finetune_session as FS\n"
            "m = S.current.model\n"
            "result = {'history': S.current.history, 'evals': S.current.evals,\n"
            "          'trained': S.current.summary()['trained_params'],\n"
            "          'dtypes': {n: t.dtype for n, t in m.weights.items()},\n"
            "          'gpu_bytes': sum(t.nbytes for t in m.weights.values()),\n"
            "          'estimate': FS.base_bytes(m.cfg, 'q4')[0]}")
        loss = [v for _, v in run["history"]]
        assert len(loss) == 3 and all(np.isfinite(loss))
        assert [s for s, _ in run["evals"]] == [0, 3] and all(np.isfinite([v for _, v in run["evals"]]))
        assert "q4" in run["dtypes"].values() and run["trained"] == q4["ftTrained"]
        assert run["gpu_bytes"] == run["estimate"]            # the page's base bytes are the GPU's
        assert page.is_visible("#dl-adapter") and page.is_hidden("#dl-merged")
        tab = np.frombuffer(handle.run(TAB_LOGITS, ids=PROMPT), np.float32)

        with page.expect_download() as dl:
            page.click("#dl-adapter")
        zpath = tmp_path / dl.value.suggested_filename
        dl.value.save_as(zpath)
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp_path / "adapter")
            folder = tmp_path / "adapter" / z.namelist()[0].split("/")[0]
        conf = json.loads((folder / "adapter_config.json").read_text())
        assert conf["target_modules"] == ["in_proj", "x_proj"] and conf["r"] == 4
        check_against_peft(folder, run["dtypes"], tab, run["trained"])

        # a reload reopens the run on its q4 base, its targets ticked, the same logits
        page.reload()
        page.wait_for_function("document.body.dataset.pretrain === 'ready'")
        page.wait_for_selector("#resume-banner:not([hidden])")
        assert f"a LoRA fine-tune of {BASE} (q4 base)" in page.inner_text("#resume-text")
        page.click("#resume-saved")
        page.wait_for_function("document.body.dataset.runShown !== undefined && document.body.dataset.train === 'done'")
        assert page.input_value("#ft-weights") == "q4"
        page.wait_for_function("document.querySelectorAll('#lora-target-boxes input').length === 4")
        assert ticked(page) == ["in_proj", "x_proj"]
        again = np.frombuffer(handle.run(TAB_LOGITS, ids=PROMPT), np.float32)
        assert np.abs(again - tab).max() <= 1e-5
        assert page.is_hidden("#dl-merged")
    finally:
        page.close()


def assert_accessible(page):
    """The fine-tune panel's new controls (weight format, target boxes) pass an axe-core scan
    at 1280 and 390 px with nothing wider than the viewport (as tests/e2e/test_accessibility.py
    checks the pages in their first state, where this panel is hidden)."""
    page.add_script_tag(path=str(REPO / "node_modules" / "axe-core" / "axe.min.js"))
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        found = page.evaluate("""async () => {
            const r = await axe.run('#ft-panel', {resultTypes: ['violations']});
            return r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
              .map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
        }""")
        assert found == [], f"at {width}px: {found}"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width


def check_against_peft(folder, dtypes, tab, trained):
    import torch
    import transformers
    from peft import PeftModel
    base_dir = REPO / "tests" / "fixtures" / "models" / BASE

    def peft_logits(quantize):
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if quantize:     # the matrices the tab holds as q4 (pieces of one tensor share a format)
            narrow = {n.split("#")[0] for n, d in dtypes.items() if d == "q4"}
            assert all(dtypes[n] == "q4" for n in dtypes if n.split("#")[0] in narrow)
            params = dict(base.named_parameters())
            with torch.no_grad():
                for name in narrow:
                    w = params[name]
                    w.copy_(torch.from_numpy(roundtrip(w.numpy(), "q4")).float())
        model = PeftModel.from_pretrained(base, folder).eval()
        assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == trained
        with torch.no_grad():
            return model(torch.tensor([PROMPT])).logits[0].numpy()

    on_q4, on_f32 = peft_logits(True), peft_logits(False)
    tab = tab.reshape(on_q4.shape)
    assert np.abs(tab - on_q4).max() <= 1e-4
    shift = on_q4 - on_f32                         # what 4-bit rounding of the base does
    quant_err = np.abs(shift).max()
    assert 0 < np.sqrt((shift ** 2).mean()) < 0.2 * on_f32.std()
    assert np.abs(tab - on_f32).max() <= quant_err + 1e-4
