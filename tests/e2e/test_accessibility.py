"""Each page, as a screen-reader or phone user meets it: an axe-core scan (npm `axe-core`,
injected from node_modules) at 1280 and 390 px finds no serious or critical violation, and
nothing makes the page wider than the viewport."""
import pytest

from tests.conftest import REPO
from tools.headless import open_engine_page

pytestmark = pytest.mark.browser
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
READY = {"/": "document.body.dataset.model === 'default'",
         "/pretrain": "document.body.dataset.pretrain === 'ready'",
         "/convert": "document.body.dataset.engine === 'ready'"}


@pytest.mark.parametrize("path", list(READY))
def test_page_has_no_serious_accessibility_violations(browser, server, path):
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci` (axe-core is a devDependency)")
    handle = open_engine_page(browser, server.url, path)
    page = handle.page
    try:
        page.wait_for_function(READY[path], timeout=60_000)
        page.add_script_tag(path=str(AXE))
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            found = page.evaluate("""async () => {
                const r = await axe.run(document, {resultTypes: ['violations']});
                return r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
                  .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
            }""")
            assert found == [], f"{path} at {width}px: {found}"
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], f"{path} at {width}px is {widths[0]}px wide"
        # the scan is not vacuous: an unnamed field added to the page is reported
        found = page.evaluate("""async () => {
            const i = Object.assign(document.createElement('input'), {type: 'number', id: 'axe-probe'});
            document.querySelector('main').append(i);
            const r = await axe.run('#axe-probe', {resultTypes: ['violations']});
            i.remove();
            return r.violations.map((v) => v.id);
        }""")
        assert "label" in found
    finally:
        page.close()
