"""The lanes variant of Mamba-1's sequence scan that Chrome on a real GPU runs for prefill
(shaders/selective_scan_lanes.wgsl: workgroup memory and barriers, 16 threads per channel),
compiled by Chromium's own WGSL compiler (Tint: its uniformity analysis checks every barrier) and
run on SwiftShader, forced: against float64 numpy and the classic kernel, several chunks with a
ragged last one, Falcon's B/C norms, N 16 and 4 (tests/browser/scan_lanes_cases.py)."""
import pytest

from tests.browser.scan_lanes_cases import check_lanes

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("nb,T,I,N,chunk,gate,eps", [(2, 37, 17, 16, 23, True, 1e-6),
                                                     (2, 45, 9, 4, 20, False, None)])
def test_lanes_scan_in_chromium(engine, nb, T, I, N, chunk, gate, eps):
    check_lanes(engine, nb, T, I, N, chunk, gate=gate, eps=eps, seed=3)
