"""Mamba-3 MIMO decoding with everything between in_proj and out_proj in one dispatch
(ops/mamba3_mimo_step.py, shaders/mamba3_step_mimo.wgsl) against the separate kernels (B's and
C's norms, mamba3_prep, mamba3_step, mamba3_mimo_out; `device.mamba3_mimo_fused = False`): the
same logits (one sequence and two; y_r's sums over N meet in a lane tree, so within rounding)
and greedy tokens, four dispatches fewer a layer, in both forms -- a head a workgroup and 8 rows
a workgroup (which never takes the out-projection norm: the head form runs then) -- each shown
to have run by its entry point. The real-GPU kernels forced on the native backend
(lavapipe here). The random models' per-head and per-rank parameters are spread (the reference
init makes them constant), and one run sets the two norms' eps apart."""
import pytest

from tests.browser.decode_fold_cases import MIMO_FORMS as FORMS, check_fold, mimo_layers
from tests.conftest import REPO
from tests.native_support import engine, entries_run, random_model, spread_parameters  # noqa: F401
from tests.native_support import native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"
ENTRY = {"head": "mamba3_step_mimo", "rows": "mamba3_step_mimo_rows"}


def check_form(engine, folder, fmt, form, **kw):
    """check_fold in `form`, and proof that the kernel expected ran (and not the other): the
    rows form's, or the head form's with the out-projection norm."""
    layers, onorm = mimo_layers(folder)
    with entries_run(engine) as seen:
        r = check_fold(engine, folder, fmt, "mamba3_mimo_fused", 4 * layers, reset=None,
                       pin=FORMS[form], **kw)
    ran = "head" if onorm else form
    other = ENTRY["head" if ran == "rows" else "rows"]
    assert ENTRY[ran] in seen and other not in seen, sorted(seen)
    return r


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name,fmt", [("mamba3-mimo-r2-g1-r05-tied", "f32"),
                                      ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f32"),
                                      ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f16")])
def test_fixtures_decode_the_same_in_one_step_dispatch(engine, name, fmt, form):
    r = check_form(engine, FIX / name, fmt, form)
    assert len(r["fold_tokens"]) > 1


@pytest.fixture(scope="module")
def mimo_heads(tmp_path_factory):
    """mamba3-187m MIMO's heads (d_state 128, head_dim 64, rank 4, half the state rotated) at
    d_model 64: two heads, here in two groups, with the out-projection norm."""
    return spread_parameters(random_model(
        tmp_path_factory, "m3mimo", "mamba3", is_mimo=True, mimo_rank=4, state_size=128,
        head_dim=64, n_groups=2, is_outproj_norm=True))


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("fmt", ["f32", "q4"])
def test_real_heads_decode_the_same_in_one_step_dispatch(engine, mimo_heads, fmt, form):
    check_form(engine, mimo_heads, fmt, form)


@pytest.fixture(scope="module")
def rank8(tmp_path_factory):
    """The largest rank (the per-rank arrays' size), four heads in two groups, a state of 160
    (past the 4 a lane the rows form loads before its prologue) with 40 angle pairs."""
    return spread_parameters(random_model(
        tmp_path_factory, "m3mimo8", "mamba3", is_mimo=True, mimo_rank=8, state_size=160,
        head_dim=32, n_groups=2), seed=1)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_rank_8_and_long_rows_decode_the_same(engine, rank8, form):
    check_form(engine, rank8, "f32", form)


@pytest.fixture
def eps_apart(engine):
    """B's and C's norms at eps 0.05, the output norm at 0.5 (both 1e-5 in real models), for
    the separate kernels and the folded step alike: a step that read one for the other would
    differ from them."""
    engine.run("import py_engine.nn.mamba3 as M\nM.BC_EPS, M.OUT_EPS = 0.05, 0.5")
    yield engine
    engine.run("import py_engine.nn.mamba3 as M\nM.BC_EPS, M.OUT_EPS = 1e-5, 1e-5")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_two_norms_eps_are_not_swapped(eps_apart, mimo_heads, form):
    check_form(eps_apart, mimo_heads, "f32", form)


class FakeDevice:
    def __init__(self, storage=16, wg_bytes=16384, **attrs):
        self.limits = {"maxStorageBuffersPerShaderStage": storage,
                       "maxComputeWorkgroupStorageSize": wg_bytes}
        self.info = {"is_fallback": False}
        self.features = {"subgroups"}
        self.__dict__.update(attrs)


def test_the_rules_take_a_form_that_fits_or_none():
    """fused() says yes only where the form mamba3_mimo_step takes fits: rows_form where it
    fits (never with the out-projection norm), else the one-workgroup form; fewer than 8
    storage bindings (below every tier Dawn gives: 8, 10, 16), or the layer's parameters not in
    one buffer: neither."""
    from py_engine.ops import mamba3_mimo_step as ms
    head = (4, 4, 128, 64, 32)                # H, R, N, P, S of mamba3_mimo_187m
    assert ms.fused(FakeDevice(), *head) and ms.rows_form(FakeDevice(), *head)
    # with the out-projection norm only the one-workgroup form runs (it folds the norm)
    assert not ms.rows_form(FakeDevice(), *head, onorm=True)
    assert ms.fused(FakeDevice(), *head, onorm=True)
    assert not ms.rows_form(FakeDevice(mamba3_mimo_rows=True), *head, onorm=True)
    assert ms.fused(FakeDevice(storage=10), *head)          # a Mac's Chrome
    assert ms.fused(FakeDevice(storage=8), *head)
    assert not ms.fused(FakeDevice(storage=7), *head)
    from py_engine.gpu.settings import storage_bindings
    assert storage_bindings(FakeDevice(storage_cap=10)) == 10      # a tier asked for
    assert storage_bindings(FakeDevice(storage=10, storage_cap=16)) == 10
    with pytest.raises(ValueError, match="one of 8, 10, 16"):
        storage_bindings(FakeDevice(storage_cap=12))
    # rank 8, N 64, P 256: only the rows form fits 16 KiB; pinned to the head form, none does
    big = (2, 8, 64, 256, 16)
    assert not ms.fits(FakeDevice(), *big[1:]) and ms.fits(FakeDevice(), *big[1:], rows=True)
    assert ms.fused(FakeDevice(), *big) and ms.rows_form(FakeDevice(), *big)
    assert not ms.fused(FakeDevice(mamba3_mimo_rows=False), *big)
    # a rows grid past one dispatch's x: the one-workgroup form where it fits
    many = (70000, 1, 16, 64, 4)
    assert not ms.rows_form(FakeDevice(), *many) and ms.fused(FakeDevice(), *many)
    assert not ms.fused(FakeDevice(mamba3_mimo_fused=False), *head)
