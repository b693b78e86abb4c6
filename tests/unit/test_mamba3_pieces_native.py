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
from tests.native_support import engine, mamba3_d64, native as pytestmark  # noqa: F401

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
    # MIMO's one-dispatch step (ops/mamba3_mimo_step) needs the packed block: held off here
    r = check_fold(engine, FIX / name, fmt, "matvec_pieces", _fewer(FIX / name), reset=None,
                   pin={"mamba3_mimo_fused": False})
    assert len(r["fold_tokens"]) > 1


@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_narrow_formats_decode_the_same_with_packed_in_proj(engine, mamba3_d64, fmt):
    check_fold(engine, mamba3_d64, fmt, "matvec_pieces", _fewer(mamba3_d64), reset=None)


PACKED = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.mamba import MambaModel
from py_engine.ops.weight_pack import is_packed
from py_engine.train.init import init_model
in_use = device.pool.in_use
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
result = {'loaded': [[is_packed(device, mx.inp), [t.pooled for t in mx.inp]] for mx in m.mixers]}
n = len(m.weights)
m.release()
result['in_use_after'] = device.pool.in_use - in_use
fresh = init_model(device, m.cfg, seed=1)        # a model built without the loader
result['fresh'] = all(is_packed(device, mx.inp) for mx in fresh.mixers)
fresh.release()
result['in_use_fresh'] = device.pool.in_use - in_use
"""


@pytest.mark.parametrize("fmt", ["f32", "q4"])
def test_loader_and_fresh_models_pack_in_proj_and_release_it(engine, mamba3_d64, fmt):
    """Every layer's eight blocks in one buffer, the first block its owner; releasing the
    model gives every pooled buffer back (the views own nothing)."""
    r = engine.run(PACKED, folder=str(mamba3_d64), fmt=fmt)
    assert r["loaded"] == [[True, [True] + [False] * 7]] * 2, r
    assert r["in_use_after"] == 0 and r["fresh"] and r["in_use_fresh"] == 0, r
