"""`mambaweb eval` in headless Chromium (the tab's engine in Pyodide on SwiftShader): the loss
over a corpus equals transformers' on the same windows within 1e-4 relative, as
tests/unit/test_eval_native.py checks on the native backend; q8 weights load and score too."""
import math

import pytest

from tests.unit.test_eval_native import FIX, check_against_transformers, run_eval, upper_case_corpus

pytestmark = pytest.mark.browser


@pytest.mark.slow
def test_browser_eval_equals_transformers(tmp_path):
    name, seq_len = "nemotronh-mamf-tied", 100        # Mamba-2, attention and MLP layers
    ids = upper_case_corpus(tmp_path / "c.txt")
    common = ["--model", str(FIX / name), "--corpus", str(tmp_path / "c.txt"), "--tokenizer",
              "byte", "--seq-len", str(seq_len)]
    out = run_eval(*common)
    assert out["backend"] == "browser" and out["weights"] == "f32"
    check_against_transformers(out, FIX / name, ids, seq_len)
    q8 = run_eval(*common, "--weights", "q8", "--max-tokens", "500")
    assert q8["weights"] == "q8" and q8["tokens"] == 499 and math.isfinite(q8["loss"])
