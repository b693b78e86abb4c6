"""Mamba-3's SISO decode step with 32 threads per state row (mamba3_step_lanes in
shaders/mamba3_step.wgsl, what real GPUs run; py_engine/ops/mamba3.step_lanes) on the native
backend (lavapipe here), forced with `device.mamba3_step_lanes`: the Mamba-3 kernel suite
(unrolled steps == the forward == float64; P not a multiple of the 8 rows a pass, N from 8 to
128, groups, rope fractions, Cols views, Bsz 2) through it; whole Mamba-3 models decode the same
logits (y's sums meet in another order: 1e-5) and greedy tokens with it as with the
thread-per-row step, SISO with B's and C's RMSNorms folded into it (two dispatches fewer per
layer; MIMO keeps its kernel and its norms) and with mamba3_prep folded into it where in_proj's
dd_dt / dd_A / trap / angles share a buffer (one more fewer: shaders/mamba3_step_folded.wgsl),
and the reference logits stored with a fixture; and the choices themselves."""
import pytest

import py_engine.ops.mamba3 as m3
from tests.browser import test_kernels_mamba3 as KM3
from tests.browser.decode_fold_cases import check_fold, check_mamba3_lanes
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture
def forced(engine):
    engine.device.mamba3_step_lanes = True
    yield engine
    engine.device.mamba3_step_lanes = None


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols", KM3.CASES)
def test_kernel_suite_steps_with_lanes(forced, nb, T, H, P, G, N, rf, heavy, with_state, cols):
    info = KM3.check_forward_step(forced, nb, T, H, P, G, N, rf, heavy, with_state, cols)
    # Cols of one in_proj-like matrix: the step computes its scalars itself (mamba3_step_folded,
    # one dispatch a token); separate tensors: mamba3_prep + the lanes step
    assert info["step_folded"] == cols


@pytest.fixture
def split(forced):
    """The split step in two dispatches (head, rows)."""
    forced.device.mamba3_step_split = True
    forced.device.mamba3_step_last = False
    yield forced
    forced.device.mamba3_step_split = None
    forced.device.mamba3_step_last = None


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols",
                         KM3.CASES + KM3.LANES_ROUNDS_CASES)
def test_kernel_suite_steps_split(split, nb, T, H, P, G, N, rf, heavy, with_state, cols):
    """The folded step as two dispatches (mamba3_step_head, then mamba3_step_rows: 8 rows a
    workgroup) where it folds (Cols views): the same reference checks; P not a multiple of 8,
    rows past 64 and states past 128 a row (a lane's second round)."""
    info = KM3.check_forward_step(split, nb, T, H, P, G, N, rf, heavy, with_state, cols)
    assert info["step_split"] == cols


@pytest.fixture
def split_last(split):
    split.device.mamba3_step_last = True
    yield split
    split.device.mamba3_step_last = None


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols",
                         KM3.CASES + KM3.LANES_ROUNDS_CASES)
def test_kernel_suite_steps_split_in_one_dispatch(split_last, nb, T, H, P, G, N, rf, heavy,
                                                  with_state, cols):
    """The split step in one dispatch (mamba3_step_rows_last: each workgroup runs its head's
    prologue, the last to have read the old k and angles writes the new ones): the reference
    checks over several tokens and two sequences -- a state written before another workgroup
    of the head read it would show in every later token."""
    info = KM3.check_forward_step(split_last, nb, T, H, P, G, N, rf, heavy, with_state, cols)
    assert info["step_last"] == cols


def test_split_step_past_the_grid_limit_runs_a_workgroup_a_head(split):
    """Where a head's rows over 8-row workgroups would pass a dispatch's x limit (the split forms
    read wid.x unfolded), the one-workgroup-a-head step runs instead of a refused dispatch: the
    limit lowered to 15 here, under the real head's 2 x 8 workgroups; the two-dispatch split is
    the form asked for, so one dispatch a token shows the fallback ran."""
    split.run("import py_engine.ops.mamba3 as m3\nm3.MAX_WORKGROUPS = 15")
    try:
        info = KM3.check_forward_step(split, 2, 3, 2, 64, 1, 128, 0.5, False, True, True)
    finally:
        split.run("import py_engine.ops.mamba3 as m3\nfrom py_engine.gpu.batch import "
                       "MAX_WORKGROUPS\nm3.MAX_WORKGROUPS = MAX_WORKGROUPS")
    assert info["step_folded"] and not info["step_split"]
    assert info["step_dispatches"] == 3          # one a token


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm"])
def test_models_decode_the_same_with_the_split_step_in_one_dispatch(split, name):
    """The same logits (1e-6) and greedy tokens as the two-dispatch split, one dispatch fewer a
    layer."""
    import json
    n_layer = json.loads((FIX / name / "config.json").read_text())["n_layer"]
    r = check_fold(split, FIX / name, "f32", "mamba3_step_last", n_layer,
                   ids=[1, 5, 9, 2, 7, 3], reset=None, tol=1e-6)
    assert len(r["fold_tokens"]) > 1


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm"])
def test_models_decode_the_same_with_the_step_split(split, name):
    """The step split in two (head, rows): one dispatch more a layer, the same arithmetic in the
    same order -- the same logits (1e-6) and greedy tokens, B's and C's norms folded or not."""
    import json
    n_layer = json.loads((FIX / name / "config.json").read_text())["n_layer"]
    r = check_fold(split, FIX / name, "f32", "mamba3_step_split", -n_layer,
                   ids=[1, 5, 9, 2, 7, 3], reset=None, tol=1e-6)
    assert len(r["fold_tokens"]) > 1


@pytest.mark.parametrize("nb,T,H,P,G,N,rf,heavy,with_state,cols", KM3.LANES_ROUNDS_CASES)
def test_lanes_step_takes_its_rows_and_states_in_rounds(forced, nb, T, H, P, G, N, rf, heavy,
                                                         with_state, cols):
    """More than the 64 rows (8 passes) and 128 states a lane a round holds in registers: the
    step walks rounds of rows and of states (lib/mamba3_step_common.wgsl, MAXP / MAXJ)."""
    info = KM3.check_forward_step(forced, nb, T, H, P, G, N, rf, heavy, with_state, cols)
    assert info["step_folded"] == cols


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus",
                                  "mamba3-g2-r10-untied-onorm", "mamba3-mimo-r2-g1-r05-tied"])
def test_models_decode_the_same_with_lanes(engine, name):
    """SISO: the lanes step with B's and C's norms folded in, two dispatches fewer per layer;
    MIMO: unchanged."""
    r = check_mamba3_lanes(engine, FIX / name)
    assert len(r["fold_tokens"]) > 1


def test_lanes_step_matches_transformers_reference(engine):
    """Step by step through the lanes step with the folded norms: the fixture's reference
    logits (state-spaces' Mamba-3 reference, stored with it)."""
    import numpy as np
    from tests.browser.decode_fold_cases import RUN
    folder = FIX / "mamba3-g1-r05-tied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None,
                   flag="mamba3_step_lanes", reset=None)
    got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
    assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4


@pytest.mark.parametrize("name", ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm"])
def test_models_decode_the_same_with_prep_folded(forced, name):
    """in_proj writes dd_dt, dd_A, trap and angles into one buffer and the lanes step computes
    DT, alpha, beta, gamma and theta itself: one dispatch fewer per layer, the same logits (the
    same expressions as mamba3_prep) and greedy tokens."""
    import json
    n_layer = json.loads((FIX / name / "config.json").read_text())["n_layer"]
    r = check_fold(forced, FIX / name, "f32", "mamba3_fold_prep", n_layer,
                   ids=[1, 5, 9, 2, 7, 3], reset=None)
    assert len(r["fold_tokens"]) > 1


class _Dev:
    def __init__(self, fallback=False, forced=None, storage=16):
        self.features, self.info = {"subgroups"}, {"is_fallback": fallback}
        self.limits = {"maxStorageBuffersPerShaderStage": storage}
        if forced is not None:
            self.mamba3_step_lanes = forced


def test_the_choice(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_MAMBA3_STEP", raising=False)
    assert m3.step_lanes(_Dev())
    assert not m3.step_lanes(_Dev(fallback=True))
    assert m3.step_lanes(_Dev(fallback=True, forced=True))
    assert not m3.step_lanes(_Dev(storage=10, forced=True))    # 11 storage bindings needed
    assert m3.step_folds_bc_norm(_Dev(), False, 128, 32)
    assert not m3.step_folds_bc_norm(_Dev(), True, 128, 32)     # MIMO
    assert not m3.step_folds_bc_norm(_Dev(), False, 1024, 32)   # 5N + S + 2048 floats > 16 KiB
    # the lanes step's workgroup memory: 3N + S floats, the B/C norm's 2N, 2048 of lane trees
    assert m3.lanes_fit(_Dev(), 128, 64, 2 * 128)                # 11 KiB
    assert m3.lanes_fit(_Dev(), 640, 0) and not m3.lanes_fit(_Dev(), 704, 0)   # 16 KiB edge
    # each variable rounded up to 16 bytes: 5N + S -> 2044, + 2048 + the flag's 4 = 4096 floats
    assert m3.step_folds_bc_norm(_Dev(), False, 402, 32)        # 5N + S = 2042 -> 2044
    assert not m3.step_folds_bc_norm(_Dev(), False, 403, 32)    # 2047 -> 2048: 4100 > 4096
    monkeypatch.delenv("MAMBAWEB_MAMBA3_PREP", raising=False)
    assert m3.step_folds_prep(_Dev(), False)
    assert not m3.step_folds_prep(_Dev(), True)                  # MIMO
    assert m3.step_folds_prep(_Dev(storage=10), False)           # 10 storage bindings: a Mac's
    assert not m3.step_folds_prep(_Dev(storage=8), False)
    # the norms fold at 10 bindings only into the folded step, with its parameters packed
    assert not m3.step_folds_bc_norm(_Dev(storage=10), False, 128, 32)
    assert not m3.step_folds_prep(_Dev(fallback=True), False)    # not the lanes step
    off = _Dev()
    off.mamba3_fold_prep = False
    assert not m3.step_folds_prep(off, False)
    monkeypatch.setenv("MAMBAWEB_MAMBA3_PREP", "separate")
    assert not m3.step_folds_prep(_Dev(), False)
    monkeypatch.setenv("MAMBAWEB_MAMBA3_STEP", "rows")
    assert not m3.step_lanes(_Dev())
    monkeypatch.delenv("MAMBAWEB_MAMBA3_SPLIT", raising=False)
    assert m3.step_splits(_Dev())                               # a real GPU
    assert not m3.step_splits(_Dev(fallback=True))              # SwiftShader, lavapipe
    on = _Dev(fallback=True)
    on.mamba3_step_split = True
    assert m3.step_splits(on)
    monkeypatch.setenv("MAMBAWEB_MAMBA3_SPLIT", "0")
    assert not m3.step_splits(_Dev())
    monkeypatch.delenv("MAMBAWEB_MAMBA3_LAST", raising=False)
    assert m3.step_last(_Dev())                                 # one dispatch where it splits
    assert m3.step_last(_Dev(storage=11))
    assert not m3.step_last(_Dev(storage=10))                   # it binds 11 storage buffers
    monkeypatch.setenv("MAMBAWEB_MAMBA3_LAST", "0")
    assert not m3.step_last(_Dev())
    monkeypatch.setenv("MAMBAWEB_MAMBA3_SPLIT", "yes")
    with pytest.raises(ValueError, match="MAMBAWEB_MAMBA3_SPLIT"):
        m3.step_splits(_Dev())


FOLD_SNIPPET = """
import math, random, types
from py_engine.gpu.tensor import Tensor
import py_engine.ops.mamba3 as m3
from py_engine.ops.rmsnorm import rmsnorm_forward
rnd = random.Random(5)
nb, H, P, G, N, S = 2, 4, 16, 2, args['N'], args['S']
def t(*shape, lo=None, hi=None):
    n = math.prod(shape)
    vals = [rnd.uniform(lo, hi) if lo is not None else rnd.gauss(0.0, 1.0) for _ in range(n)]
    return Tensor.from_list(device, shape, vals)
x, B, C = t(nb, H * P), t(nb, G * N), t(nb, G * N)
dd_dt, dd_A, trap, ang = t(nb, H), t(nb, H), t(nb, H), t(nb, S)
Bw, Cw = t(N, lo=0.5, hi=1.5), t(N, lo=0.5, hi=1.5)
kw = dict(dt_bias=t(H, lo=-1.0, hi=0.5), B_bias=t(H, N, lo=-0.1, hi=0.1),
          C_bias=t(H, N, lo=-0.1, hi=0.1), D=t(H), n_heads=H, n_groups=G, S=S, A_floor=1e-4)
init = {'angle': t(nb, H, S, lo=0.0, hi=6.0), 'ssm': t(nb, H, P, N), 'k': t(nb, H, N),
        'v': t(nb, H, P)}
def fresh():
    st = types.SimpleNamespace()
    b = device.batch()
    for k, v in init.items():
        c = Tensor(device, v.shape)
        b.copy(v.buffer, v.offset, c.buffer, c.offset, v.nbytes)
        setattr(st, k, c)
    b.submit()
    return st
device.mamba3_step_lanes = True
try:
    sa, sb = fresh(), fresh()
    b = device.batch()
    Bn, _ = rmsnorm_forward(b, B.view((nb * G, N)), Bw, eps=1e-5)
    Cn, _ = rmsnorm_forward(b, C.view((nb * G, N)), Cw, eps=1e-5)
    ya = m3.mamba3_step(b, x, Bn.view((nb, G * N)), Cn.view((nb, G * N)), dd_dt, dd_A, trap, ang,
                        sa, **kw)
    yb = m3.mamba3_step(b, x, B, C, dd_dt, dd_A, trap, ang, sb, bc_norm=(Bw, Cw, 1e-5), **kw)
    b.submit()
    result = {'y': [await ya.to_bytes(), await yb.to_bytes()],
              'states': [[await getattr(s, k).to_bytes() for k in ('angle', 'ssm', 'k', 'v')]
                         for s in (sa, sb)]}
finally:
    device.mamba3_step_lanes = None
"""


@pytest.mark.parametrize("N, S", [(128, 32), (96, 48), (8, 2)])
def test_folded_norms_equal_rmsnorm_then_step_bit_for_bit(engine, N, S):
    """The step with raw B / C and their norm weights against rmsnorm_forward then the same
    lanes step: the folded norm sums as rmsnorm_forward does (64 lanes, the same tree), so y
    and every state are equal bit for bit -- at N = 128 (two terms a lane, four states a
    trip), 96 (a ragged lane split) and 8."""
    r = engine.run(FOLD_SNIPPET, N=N, S=S)
    assert r["y"][0] == r["y"][1]
    assert r["states"][0] == r["states"][1]
    import numpy as np
    assert np.abs(np.frombuffer(r["y"][0], np.float32)).max() > 0.01
