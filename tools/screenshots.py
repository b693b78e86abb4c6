"""Retake the README's screenshots as a person sees the pages (issue 16):

    python -m tools.screenshots --out web/img

The app server on the embedded default model (as `make run`, without the local HuggingFace
cache, so every machine takes the same pictures) and headless Chromium at 1280 px wide:
  - Generate (screenshot-generate.png): the default model loaded by itself, a greedy
    continuation of `def fibonacci(n):` (64 new tokens) with its speed line;
  - Train (screenshot-train.png): after a short run from scratch on the sample corpus (a tiny
    model, a few dozen steps): run status, statistics, the loss chart and a sample;
  - Convert (screenshot-convert.png): after converting the Mamba-1 fixture folder
    tests/fixtures/models/mamba-d40-tied to MBJS: the source, options and the result.
Each picture is cropped to the part of the page that shows that state and must stay under
MAX_BYTES (the README's page weight); one JSON line per picture says what it captured.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 900
MAX_BYTES = 300_000
PROMPT = "def fibonacci(n):"
CONVERT_FIXTURE = REPO / "tests" / "fixtures" / "models" / "mamba-d40-tied"   # MBJS ties heads
# the Train picture's run: small enough for a software GPU, long enough for a curve
TRAIN = {"#lr": "5e-3", "#batch": "4", "#seq_len": "64", "#steps": "150",
         "#sample_every": "75", "#sample_prompt": "def "}


def _open(browser, url, path):
    from tools.headless import open_engine_page
    handle = open_engine_page(browser, url, path)
    handle.page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    handle.page.set_default_timeout(300_000)
    return handle.page


def _settle(page, flag, done, states):
    """Wait until body.dataset[flag] is `done` or an error state; an error stops the tool with
    the page's own message (a picture of a failure is not a README picture)."""
    cond = " || ".join(f"document.body.dataset.{flag} === {v!r}" for v in (done,) + states)
    page.wait_for_function(cond)
    got = page.evaluate(f"document.body.dataset.{flag}")
    if got != done:
        text = page.inner_text("#message") if page.is_visible("#message") else ""
        raise SystemExit(f"{page.url}: {flag} is {got!r}, not {done!r}: {text}")


def _box(page, selector):
    """(top, bottom) of an element in page coordinates."""
    return page.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
        return [r.top + window.scrollY, r.bottom + window.scrollY]; }""", selector)


def _shot(page, path, top, bottom, margin=16):
    """A full-width crop of the page from `top` to `bottom` (page px) saved as PNG."""
    top = max(0, top - margin)
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": 0, "y": top, "width": WIDTH, "height": bottom + margin - top})
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over the {MAX_BYTES}-byte budget: crop it "
                         "smaller in tools/screenshots.py")
    return size


def generate(browser, url, out):
    page = _open(browser, url, "/")
    try:
        page.wait_for_function("document.body.dataset.model === 'default'")
        page.fill("#prompt", PROMPT)
        page.fill("#max-new", "64")
        page.check("#greedy")
        n = int(page.evaluate("document.body.dataset.generations || '0'"))
        page.click("#generate-btn")
        page.wait_for_function(f"+(document.body.dataset.generations || 0) > {n}")
        page.evaluate("document.activeElement && document.activeElement.blur()")
        path = out / "screenshot-generate.png"
        size = _shot(page, path, 0, _box(page, "#generate-card")[1])
        return {"page": "Generate", "file": str(path), "bytes": size,
                "state": f"default model, greedy continuation of {PROMPT!r}",
                "stats": page.inner_text("#gen-stats")}
    finally:
        page.close()


def train(browser, url, out):
    page = _open(browser, url, "/pretrain")
    try:
        page.wait_for_function("document.body.dataset.pretrain === 'ready'")
        page.click("#use-sample")
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        page.select_option("#size", "tiny")
        for sel, v in TRAIN.items():
            page.fill(sel, v)
        page.click("#start")
        _settle(page, "train", "done", ("error", "stopped"))
        page.evaluate("document.activeElement && document.activeElement.blur()")
        path = out / "screenshot-train.png"
        # from "4 · Training" (settings, controls, statistics, loss chart) to the samples
        top = page.evaluate("""() => { const h = [...document.querySelectorAll('#page-body h3')]
            .find(e => e.textContent.includes('Training'));
            return h.getBoundingClientRect().top + window.scrollY; }""")
        size = _shot(page, path, top, _box(page, "#samples")[1])
        return {"page": "Train", "file": str(path), "bytes": size,
                "state": f"finished run from scratch on the sample corpus ({TRAIN['#steps']} "
                         "steps, tiny Mamba-1, byte tokenizer)",
                "stats": page.inner_text("#loss-summary")}
    finally:
        page.close()


def convert(browser, url, out):
    page = _open(browser, url, "/convert")
    try:
        page.evaluate("document.body.dataset.convert = ''")
        page.set_input_files("#folder-input", str(CONVERT_FIXTURE))
        _settle(page, "convert", "ready", ("error",))
        page.select_option("#target", "mbjs")
        page.select_option("#dtype", "f32")
        page.click("#convert")                 # the download itself goes to a temporary file
        _settle(page, "convert", "done", ("error",))
        page.evaluate("document.activeElement && document.activeElement.blur()")
        path = out / "screenshot-convert.png"
        size = _shot(page, path, 0, _box(page, "#page-body")[1])
        return {"page": "Convert", "file": str(path), "bytes": size,
                "state": f"converted {CONVERT_FIXTURE.name} (HF folder) to MBJS f32",
                "stats": page.inner_text("#result-summary")}
    finally:
        page.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "web" / "img"), help="folder for the PNGs")
    ap.add_argument("--only", choices=("generate", "train", "convert"), action="append",
                    help="retake only these pictures (repeatable; default: all)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    from server.app import create_app
    from tools.headless import LiveServer, launch_chromium
    app = create_app([REPO / "models"], use_hf_cache=False)
    takes = {"generate": generate, "train": train, "convert": convert}
    with LiveServer(app) as live, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            for name in args.only or list(takes):
                print(json.dumps(takes[name](browser, live.url, out)), flush=True)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
