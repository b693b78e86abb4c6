"""The pretrain page without a mouse or without sight: the drop zone opens the file chooser
from the keyboard, the run state is a word (Ready / Training / Finished), and the loss chart
has a text alternative that follows the run."""
import re

import pytest

from tools.headless import open_engine_page

pytestmark = pytest.mark.browser


def test_keyboard_drop_zone_states_and_chart_text(browser, server):
    handle = open_engine_page(browser, server.url, "/pretrain")
    page = handle.page
    page.set_default_timeout(90_000)
    try:
        page.wait_for_function("document.body.dataset.pretrain === 'ready'")
        assert page.inner_text("#run-status") == "Ready"
        assert page.get_attribute("#loss-plot", "role") == "img"
        with page.expect_file_chooser() as chooser:
            page.focus("#dropzone")
            page.keyboard.press("Enter")
        assert chooser.value.is_multiple()
        page.click("#use-sample")
        page.wait_for_function("document.body.dataset.corpus === 'ready'")
        page.select_option("#size", "tiny")
        page.click("#config-details summary")
        for sel, v in {"#cfg-hidden_size": 32, "#batch": 2, "#seq_len": 16, "#steps": 3,
                       "#sample_every": 0, "#autosave_every": 0}.items():
            page.fill(sel, str(v))
        page.click("#start")
        page.wait_for_function("document.body.dataset.train === 'done'")
        assert page.inner_text("#run-status") == "Finished"
        summary = page.inner_text("#loss-summary")
        assert re.match(r"Loss \d+\.\d{3} at step 3 of 3, from \d+\.\d{3} at step 1; lowest", summary), summary
        assert summary in page.get_attribute("#loss-plot", "aria-label")
    finally:
        page.close()
