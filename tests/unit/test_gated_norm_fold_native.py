"""Decode with an op folded into the next mat-vec (shaders/lib/matvec_rows.wgsl) on the native
backend (lavapipe here) with the real-GPU decode kernels forced: Mamba-2's gated RMSNorm into
out_proj (GATED, py_engine/ops/linear.gated_norm_accumulate), Mamba-3's gate likewise, and
NemotronH's MLP relu^2 into
down_proj (RELU2, linear.relu2_accumulate). Step logits for one and two sequences and greedy
tokens against the separate dispatches (the gated norm's sums meet in another order: 1e-5), one
dispatch fewer per folded layer (several norm groups and Mamba-3's head-wise norm too: their
1/rms applied while the input is staged); the fixtures' step logits against transformers.
"""
import numpy as np
import pytest

from tests.browser.decode_fold_cases import RUN, check_gated, check_relu2
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark, random_model  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8"])
@pytest.mark.parametrize("name", ["mamba2-g1-tied", "mamba2-g2-untied"])
def test_folded_gated_norm_equals_the_separate_dispatches(engine, name, fmt):
    check_gated(engine, FIX / name, fmt)


@pytest.mark.parametrize("fmt, stage", [("f32", None), ("q4", None), ("q4", True)])
def test_the_default_model_folds_its_gated_norms(engine, fmt, stage):
    """models/default (Mamba-2 d256 x 8, one group): out_proj's K = 512 takes q4 too, and the
    staged x (forced) stages the gated, normalised input."""
    folder = REPO / "models" / "default"
    assert (folder / "model.safetensors").is_file(), "models/default is committed: restore it"
    check_gated(engine, folder, fmt, stage, ids=[72, 101, 108, 108])


def test_folded_step_matches_transformers(engine):
    """Step by step through the folded decode: transformers' logits stored with the fixture."""
    folder = FIX / "mamba2-g1-tied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None,
                   flag="fuse_gated_norm")
    got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
    assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["f32", "f16"])
@pytest.mark.parametrize("name", ["nemotronh-mamf-tied", "nemotronh-mamf-untied",
                                  "nemotronh-mamf-tied-pattern"])
def test_folded_mlp_activation_equals_the_separate_dispatch(engine, name, fmt):
    check_relu2(engine, FIX / name, fmt)


def test_folded_hybrid_step_matches_transformers(engine):
    """NemotronH (Mamba-2, attention, MLP) step by step through the folded decode:
    transformers' logits stored with the fixture."""
    folder = FIX / "nemotronh-mamf-untied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None, flag="fuse_mlp_act")
    got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
    assert np.abs(got - exp["step_logits"]).max() <= 1e-4      # transformers' cached decode


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus",
                                  "mamba3-g2-r10-untied-onorm", "mamba3-mimo-r2-g1-r05-tied"])
def test_mamba3_gate_folds_into_out_proj(engine, name):
    """Mamba-3 SISO without the out-projection norm: y * silu(z) folded into out_proj's input,
    two dispatches fewer per layer; with the norm one fewer where a head's dims are whole vec4s
    (not this fixture's 10); MIMO: nothing changes."""
    check_gated(engine, FIX / name, "f32", ids=[1, 5, 9, 2, 7, 3])


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Mamba-2 with four norm groups (32 inputs each), Mamba-3 SISO with its out-projection
    norm (a group a head of 32)."""
    return {"mamba2": random_model(tmp_path_factory, "m2g4", "mamba2", n_groups=4),
            "mamba3": random_model(tmp_path_factory, "m3on", "mamba3", is_outproj_norm=True)}


@pytest.mark.parametrize("kind,fmt,stage", [("mamba2", "f32", None), ("mamba2", "q4", None),
                                            ("mamba3", "f32", None), ("mamba3", "f16", None),
                                            ("mamba3", "q8", None)])
def test_grouped_norms_fold_into_out_proj(engine, grouped, kind, fmt, stage):
    """Several norm groups (Mamba-2's n_groups, real NemotronH and Codestral checkpoints have
    8) and Mamba-3's head-wise norm before its gate: each group's 1/rms applied while out_proj
    stages its input (NORM_GROUPS), one dispatch fewer a layer; two sequences keep the separate
    ops (their logits equal too)."""
    check_gated(engine, grouped[kind], fmt, stage, ids=[1, 5, 9, 2, 7, 3])


def test_grouped_norm_fold_in_a_hybrid(engine):
    """NemotronH with two norm groups and no out_proj bias: its Mamba-2 layers fold."""
    check_gated(engine, FIX / "nemotronh-mamf-tied", "f32")
