"""Mamba-3 decoding with in_proj's eight row blocks packed side by side (ops/weight_pack.py, at
model build) and multiplied in ONE mat-vec dispatch (linear.linear_pieces), against the same
model with the blocks three to a dispatch (`device.matvec_pieces = False`): the same logits (one
sequence and two; each row's sums in the same order, so within rounding of the step's own
choices) and greedy tokens, two dispatches fewer a layer. The real-GPU kernels forced on the
native backend (lavapipe here); the fixtures' d_model 24 takes f32 and f16, a random d_model-64
Mamba-3 q8 and q4."""
import pytest

from tests.browser.decode_fold_cases import check_fold
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


def _fewer(folder):
    import json
    from pathlib import Path
    cfg = json.loads((Path(folder) / "config.json").read_text())
    return 2 * cfg.get("n_layer", cfg.get("num_hidden_layers"))


@pytest.mark.parametrize("name,fmt", [("mamba3-g1-r05-tied", "f32"),
                                      ("mamba3-g2-r05-tied-softplus", "f16"),
                                      ("mamba3-mimo-r2-g1-r05-tied", "f32"),
                                      ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f16")])
def test_fixtures_decode_the_same_with_packed_in_proj(engine, name, fmt):
    r = check_fold(engine, FIX / name, fmt, "matvec_pieces", _fewer(FIX / name), reset=None)
    assert len(r["fold_tokens"]) > 1


@pytest.fixture(scope="module")
def d64(tmp_path_factory):
    """A random Mamba-3 of d_model 64 (bf16 on disk): in_proj's K takes q8's and q4's chunks."""
    from tools.cmd_bench import _write_random_model
    folder = tmp_path_factory.mktemp("m3d64")
    _write_random_model(str(folder), dict(d_model=64, n_layers=2, vocab_size=128,
                                          family="mamba3"))
    return folder


@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_narrow_formats_decode_the_same_with_packed_in_proj(engine, d64, fmt):
    check_fold(engine, d64, fmt, "matvec_pieces", _fewer(d64), reset=None)
