"""The convert page as a person uses it: drop files, pick a target, get a download.

Drops are real `drop` events carrying a DataTransfer of File objects built from the fixture
bytes (or the folder picker, through Playwright's set_input_files on the page's
webkitdirectory input). Both executors run py_engine.io.convert_plan's plans: every download
(worker.mjs's executor) is compared byte for byte with what tools/convert_host.py's numpy
executor (`mambaweb convert`) writes for the same input.
"""
import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tools import convert_host
from tools.headless import open_engine_page
from py_engine.models.config import MambaConfig

pytestmark = pytest.mark.browser
MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
quiet = dict(log=lambda *_: None)

DROP_JS = """([files]) => {
  const dt = new DataTransfer();
  for (const [name, b64] of files) {
    const bin = atob(b64);
    const u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    dt.items.add(new File([u8], name));
  }
  document.body.dataset.convert = "";
  document.getElementById("dropzone").dispatchEvent(
    new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""
SETTLED = "['ready', 'error'].includes(document.body.dataset.convert)"


@pytest.fixture(scope="module")
def page(browser, server):
    handle = open_engine_page(browser, server.url, "/convert")
    handle.page.set_default_timeout(60_000)
    yield handle.page
    handle.page.close()


def drop(page, paths, names=None):
    files = [(n or p.name, base64.b64encode(p.read_bytes()).decode())
             for p, n in zip(paths, names or [None] * len(paths))]
    page.evaluate(DROP_JS, [files])
    page.wait_for_function(SETTLED)
    return page.evaluate("document.body.dataset.convert")


def pick_folder(page, folder):
    page.evaluate("document.body.dataset.convert = ''")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_function(SETTLED)
    return page.evaluate("document.body.dataset.convert")


def message(page):
    return page.inner_text("#message")


def convert(page, target, dtype):
    page.select_option("#target", target)
    page.select_option("#dtype", dtype)
    with page.expect_download() as info:
        page.click("#convert")
    dl = info.value
    data = Path(dl.path()).read_bytes()
    page.wait_for_function("document.body.dataset.convert === 'done'")
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    return dl.suggested_filename, data


def unzip(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        names = z.namelist()
        folders = {n.split("/")[0] for n in names}
        assert len(folders) == 1 and all(n.count("/") == 1 for n in names), names
        return folders.pop(), {n.split("/")[1]: z.read(n) for n in names}


def host_folder(path):
    return {p.name: p.read_bytes() for p in Path(path).iterdir()}


def test_hf_f32_to_mbjs(page, tmp_path):
    src = MODELS / "mamba-d40-tied"
    assert drop(page, sorted(src.iterdir())) == "ready"      # expected.npz rides along, ignored
    assert "HF" in page.inner_text("#source") and "expected.npz" in page.inner_text("#source")
    page.evaluate("window.engine.on('convert-progress', (m) => { window.cvLast = m; })")
    name, data = convert(page, "mbjs", "f32")
    last = page.evaluate("window.cvLast")
    assert last["done"] == last["total"] == len(data) and last["label"] == "done"
    convert_host.convert(src, tmp_path / "want.bin", **quiet)
    assert name == "mamba.bin"
    assert data == (tmp_path / "want.bin").read_bytes()


def test_mbjs_to_hf(page, tmp_path):
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "tiny.bin", **quiet)
    assert drop(page, [tmp_path / "tiny.bin"]) == "ready"
    assert "MBJS v2" in page.inner_text("#source")
    name, data = convert(page, "hf", "keep")
    folder, files = unzip(data)
    convert_host.convert(tmp_path / "tiny.bin", tmp_path / "want", **quiet)
    assert (name, folder) == ("tiny-hf-float32.zip", "tiny-hf-float32")
    assert files == host_folder(tmp_path / "want")


def _special_model(folder):
    """An f32 checkpoint whose embedding holds the rounding edge cases: ties to even,
    subnormals, overflow to inf, infinities, NaN payloads, plus random bit patterns."""
    cfg = MambaConfig.from_hf_dict(json.loads((MODELS / "mamba-d40-tied" / "config.json")
                                              .read_text()))
    from safetensors.numpy import load_file
    tensors = load_file(MODELS / "mamba-d40-tied" / "model.safetensors")
    emb = tensors["backbone.embeddings.weight"]
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=emb.size, dtype=np.uint64).astype(np.uint32)
    edges = [0x3F808000, 0x3F818000, 0x3F801000, 0x3F803000, 0x477FE000, 0x477FF000,
             0x477FEFFF, 0x7F7FFFFF, 0x38800000, 0x387FFFFF, 0x33000000, 0x33000001,
             0x00000001, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
             0xFFFFFFFF, 0x7FBFFFFF, 0x3F7FFFFF, 0xC77FF000]
    bits[:len(edges)] = edges
    tensors["backbone.embeddings.weight"] = bits.view(np.float32).reshape(emb.shape)
    convert_host.write_hf(folder, cfg, tensors, "F32")
    return folder


@pytest.mark.parametrize("dtype, torch_name", [("bf16", "bfloat16"), ("f16", "float16")])
def test_hf_f32_to_hf_rounding(page, tmp_path, dtype, torch_name):
    src = _special_model(tmp_path / "edge")
    page.evaluate("document.body.dataset.convert = ''")
    page.set_input_files("#file-input", [str(p) for p in sorted(src.iterdir())])
    page.wait_for_function(SETTLED)
    name, data = convert(page, "hf", dtype)
    folder, files = unzip(data)
    convert_host.convert(src, tmp_path / "want", dtype=dtype, **quiet)
    assert folder == f"mamba-{torch_name}"
    assert files == host_folder(tmp_path / "want")


def test_sharded_folder_to_single(page, tmp_path):
    convert_host.convert(MODELS / "mamba-d24-untied", tmp_path / "sharded", shards=3, **quiet)
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) == 3
    assert pick_folder(page, tmp_path / "sharded") == "ready"
    assert "3 safetensors file(s)" in page.inner_text("#source")
    name, data = convert(page, "hf", "keep")
    folder, files = unzip(data)
    convert_host.convert(tmp_path / "sharded", tmp_path / "want", **quiet)
    assert name == "sharded-float32.zip"
    assert set(files) == {"config.json", "model.safetensors", "generation_config.json"}
    assert files == host_folder(tmp_path / "want")
    links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.download)")
    assert links == ["model.safetensors", "config.json", "generation_config.json"]


def test_bad_drops_say_what_to_do(page, tmp_path):
    junk = tmp_path / "holiday.jpg"
    junk.write_bytes(bytes(range(256)) * 10)
    assert drop(page, [junk]) == "error"
    assert "holiday.jpg is neither an HF model file" in message(page)
    assert "Drop an HF model folder" in message(page)

    assert drop(page, [MODELS / "mamba-d40-tied" / "model.safetensors"]) == "error"
    assert "came without config.json" in message(page)
    assert "Drop the whole model folder" in message(page)

    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "sh", shards=2, **quiet)
    partial = [p for p in sorted((tmp_path / "sh").iterdir()) if "-00002-of" not in p.name]
    assert drop(page, partial) == "error"
    assert "model-00002-of-00002.safetensors, which was not dropped" in message(page)

    # A valid model the chosen target cannot hold: refused at Convert, with the way out.
    for model, needle in (("mamba-d24-untied", "untied LM head"),
                          ("falcon-d24-tied", "Falcon-Mamba")):
        src = MODELS / model
        assert drop(page, [src / "config.json", src / "model.safetensors"]) == "ready"
        assert page.input_value("#target") == "hf"     # the page proposes what works
        page.select_option("#target", "mbjs")
        page.evaluate("document.body.dataset.convert = ''")
        page.click("#convert")
        page.wait_for_function("document.body.dataset.convert === 'error'")
        assert needle in message(page) and "HF safetensors as the target" in message(page)


def test_untied_head_dropped_when_asked(page, tmp_path):
    src = MODELS / "mamba-d24-untied"
    assert drop(page, [src / "config.json", src / "model.safetensors"]) == "ready"
    page.select_option("#target", "mbjs")
    page.check("#drop-head")
    name, data = convert(page, "mbjs", "f16")
    convert_host.convert(src, tmp_path / "want.bin", dtype="f16", drop_untied_head=True,
                         **quiet)
    assert data == (tmp_path / "want.bin").read_bytes()
    assert "dropped the untied lm_head.weight" in page.inner_text("#result-notes")


def test_mamba_ssm_bin_folder_to_hf(page, tmp_path):
    """mamba_ssm's folder (its config.json, pytorch_model.bin with `backbone.embedding` and a
    saved tied head) becomes, in the tab as on the host, the file transformers wrote."""
    src = MODELS / "mamba2-g1-tied-ssm-bin"
    assert pick_folder(page, src) == "ready"
    assert "1 PyTorch .bin file(s)" in page.inner_text("#source")
    assert page.input_value("#target") == "hf"          # Mamba-2: MBJS cannot hold it
    name, data = convert(page, "hf", "keep")
    folder, files = unzip(data)
    convert_host.convert(src, tmp_path / "want", **quiet)
    assert (name, folder) == ("mamba2-g1-tied-ssm-bin-float32.zip",
                              "mamba2-g1-tied-ssm-bin-float32")
    assert files == host_folder(tmp_path / "want")
    assert files["model.safetensors"] == (MODELS / "mamba2-g1-tied" /
                                          "model.safetensors").read_bytes()
    assert json.loads(files["config.json"])["model_type"] == "mamba2"


def test_mamba2_to_bf16_and_mbjs_refused(page, tmp_path):
    src = MODELS / "mamba2-g2-untied"
    assert drop(page, sorted(src.iterdir())) == "ready"
    assert page.input_value("#target") == "hf"
    name, data = convert(page, "hf", "bf16")
    folder, files = unzip(data)
    convert_host.convert(src, tmp_path / "want", dtype="bf16", **quiet)
    assert folder == "mamba2-bfloat16"           # loose files: named by model_type
    assert files == host_folder(tmp_path / "want")
    assert json.loads(files["config.json"])["dtype"] == "bfloat16"
    # MBJS holds Mamba-1 layers only: refused by the layer kind's name
    page.select_option("#target", "mbjs")
    page.evaluate("document.body.dataset.convert = ''")
    page.click("#convert")
    page.wait_for_function("document.body.dataset.convert === 'error'")
    assert "layer 0 is 'mamba2'" in message(page) and "HF safetensors" in message(page)


def test_mbjs_with_attention_asks_for_the_head_count(page, tmp_path):
    """An MBJS file with npm attention layers (type 3) and no config.json beside it: the file
    does not store the head count, so the page asks for it in its own box (a wrong one is
    refused by name), reads the file again with it, and converts to the same HF folder as
    `mambaweb convert --attention-heads 4`."""
    from py_engine.models.config import MambaConfig as Cfg
    from tools.init_weights import init_weights
    cfg = Cfg(model_type="mamba", hidden_size=32, num_hidden_layers=3, vocab_size=64,
              state_size=8, conv_kernel=4, layers=["mamba1", "attention", "mamba1"],
              attention_heads=4, attention_kv_heads=4, attention_head_dim=8)
    convert_host.write_hf(str(tmp_path / "hf"), cfg, init_weights(cfg, 3), "F32")
    convert_host.convert(tmp_path / "hf", tmp_path / "hybrid.bin", **quiet)

    page.evaluate(DROP_JS, [[("hybrid.bin", base64.b64encode(
        (tmp_path / "hybrid.bin").read_bytes()).decode())]])
    page.wait_for_function("document.body.dataset.convert === 'needs-hint'")
    assert "does not store its head count" in message(page)
    assert page.is_visible("#hint-box") and page.is_disabled("#convert")

    page.fill("#heads", "5")                          # does not divide d_model 32
    page.click("#read-again")
    page.wait_for_function(SETTLED)
    assert "attention_heads 5 does not divide d_model 32" in message(page)
    assert page.is_visible("#hint-box") and page.is_disabled("#convert")

    page.fill("#heads", "4")
    page.click("#read-again")
    page.wait_for_function("document.body.dataset.convert === 'ready'")
    assert page.is_hidden("#message") and "MBJS" in page.inner_text("#source")
    name, data = convert(page, "hf", "keep")
    folder, files = unzip(data)
    convert_host.convert(tmp_path / "hybrid.bin", tmp_path / "want",
                         hints={"attention_heads": 4}, **quiet)
    assert files == host_folder(tmp_path / "want")
    assert json.loads(files["config.json"])["attention_heads"] == 4

    # the next file starts with an empty box, hidden until a file needs it
    assert drop(page, [tmp_path / "hf" / n for n in ("config.json", "model.safetensors")]) == "ready"
    assert page.is_hidden("#hint-box") and page.input_value("#heads") == ""
