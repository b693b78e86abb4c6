"""Mamba-1 decode with x_proj folded away (lib/matvec_xproj.wgsl: in_proj + conv step's
workgroups write their channels' shares of x_proj's outputs, the scan step sums them; three
dispatches a layer instead of four) on the native backend (lavapipe here) with the real-GPU
decode kernels forced: step logits for one and two sequences and greedy tokens against the
separate x_proj dispatch (the shares meet in another order: within 1e-5), one dispatch fewer per
layer; Falcon-Mamba (B, C and dt_low normalised) too; transformers' logits step by step; q8
(each share times its x_proj row's scale; its plain fold by rule too) and q4 (each chunk's
terms times its scale) where forced or gathered; and the shapes the kernel does not take keep the x_proj dispatch."""
import numpy as np
import pytest

from tests.browser.decode_fold_cases import RUN, check_xproj
from tests.browser.xproj_gather_cases import check_early_same_bits, check_gather
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture(scope="module")
def mamba_d64(tmp_path_factory):
    """A random two-layer Mamba-1 of d_model 64: the d24/d40 fixtures' in_proj (K 24, 40) is
    not a whole number of q8's 16-value chunks, so it stays f32 and no q8 fold applies."""
    from tools.cmd_bench import _write_random_model
    folder = tmp_path_factory.mktemp("mamba1_d64")
    _write_random_model(str(folder), dict(d_model=64, n_layers=2, vocab_size=128,
                                          family="mamba1", overrides={}))
    return folder


class _Dev:
    """What weight_format's rules read of a device: its storage bindings a stage, subgroups."""
    has_subgroups = True

    def __init__(self, bindings=16):
        self.limits = {"maxStorageBuffersPerShaderStage": bindings}


def _binds_10(engine):
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 10:
        pytest.skip("this adapter binds fewer than 10 storage buffers per stage")


@pytest.mark.parametrize("fmt", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied"])
def test_folded_xproj_equals_the_separate_dispatch(engine, name, fmt):
    _binds_10(engine)
    check_xproj(engine, FIX / name, fmt)


@pytest.mark.parametrize("fmt", ["q8", "q4"])
@pytest.mark.parametrize("gather", [0, 1, 2])
def test_quantized_folded_xproj_equals_the_separate_dispatch(engine, mamba_d64, gather, fmt):
    """q8 and q4 (forced; q4's plain fold is not a rule): q8's shares times each x_proj
    row's scale, q4's terms times each chunk's (two rows a thread: 32-channel blocks, one group
    of x_proj's inputs); plain, gathered in the largest groups and in groups of two."""
    _binds_10(engine)
    check_xproj(engine, mamba_d64, fmt, gather=gather,
                pin={"matvec_rpt": 2} if fmt == "q4" else None)


@pytest.mark.parametrize("gather", [1, 2])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied"])
def test_gathered_shares_equal_the_separate_dispatch(engine, name, gather):
    """The shares gathered inside the in_proj dispatch (lib/matvec_xproj_gather.wgsl): in one
    group of five (1: the largest group) and in three groups of two, the last of one (2)."""
    _binds_10(engine)
    check_xproj(engine, FIX / name, "f16", gather=gather)


def test_folded_xproj_with_x_staged(engine):
    _binds_10(engine)
    check_xproj(engine, FIX / "mamba-d40-tied", "f16", stage=True)


def test_folded_xproj_step_matches_transformers(engine):
    """Step by step through the folded decode: transformers' logits stored with the fixture."""
    _binds_10(engine)
    for name in ("mamba-d40-tied", "falcon-d40-untied"):
        folder = FIX / name
        exp = np.load(folder / "expected.npz")
        ids = exp["prompt_ids"].tolist()
        r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids, stage=None,
                       flag="fuse_xproj")
        got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
        assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4, name


def test_block_rules():
    """Where the kernel applies: whole chunks per workgroup block, u within 64 values, x_proj's
    rows within 512, 14 storage bindings."""
    from py_engine.ops import weight_format as wf

    assert wf.xproj_block(_Dev(), "f16", 768, [1536, 1536], 1, 80) is not None
    assert wf.xproj_block(_Dev(), "q4", 768, [1536, 1536], 1, 80) is None
    assert wf.xproj_block(_Dev(), "q8", 768, [1536, 1536], 1, 80) == 16        # by rule (H100)
    assert wf.xproj_block(_Dev(), "q8", 768, [1536, 1536], 1, 80, rule=False) == 16
    assert wf.xproj_block(_Dev(), "q4", 768, [1536, 1536], 1, 80, rule=False) is None
    assert wf.xproj_block(_Dev(), "f16", 768, [1536, 1536], 1, 600) is None
    # a Mac's Chrome: x_proj's rows packed
    assert wf.xproj_block(_Dev(10), "f16", 768, [1536, 1536], 1, 80) is not None
    assert wf.xproj_block(_Dev(8), "f16", 768, [1536, 1536], 1, 80) is None


def test_the_rule_takes_the_fold_where_the_shares_sum_is_short(monkeypatch):
    """By rule (weight_format.XPROJ_MAX_LOADS) the plain fold goes where the scan step's sum of
    the shares takes few loads a thread -- mamba-130m's shape (I 1536, O 80) -- and not at
    mamba-1.4b's (I 4096, O 160), where it measured slower: there the shares are gathered
    (weight_format.gather_rule), the scan summing 32 group totals (16 in q8 and q4, whose
    blocks are 32 channels) -- in every format. q8 takes the plain fold at 130m as the float
    formats do (measured faster on an H100: XPROJ_RULE_FORMATS); q4's plain fold stays off by
    rule. Forced, the plain fold fits both shapes."""
    from py_engine.ops import weight_format as wf

    dev = _Dev()

    def loads(I, O):
        cb = wf.xproj_block(dev, "f16", I // 2, [I, I], 1, O, rule=False)
        P, Q = -(-I // cb), -(-O // 4)
        return -(-P // (128 // Q))
    monkeypatch.delenv("MAMBAWEB_XPROJ_GATHER", raising=False)
    assert loads(1536, 80) <= wf.XPROJ_MAX_LOADS < loads(4096, 160)
    assert wf.xproj_block(dev, "f16", 768, [1536, 1536], 1, 80) is not None
    assert wf.xproj_group(dev, 1, 80, 96, "f16") == 0                 # 130m: the plain fold
    assert wf.xproj_block(dev, "f16", 2048, [4096, 4096], 1, 160) == 16
    assert wf.xproj_group(dev, 1, 160, 256, "f16") == 8               # 1.4b: gathered in eights
    assert wf.xproj_group(dev, 1, 160, 128, "q4") == 8                # q4 and q8 too (H100)
    assert wf.xproj_block(dev, "q4", 2048, [4096, 4096], 1, 160) == 32
    assert wf.xproj_block(dev, "q8", 2048, [4096, 4096], 1, 160) == 32
    assert wf.xproj_group(dev, 1, 80, 48, "q4") == 0                  # 130m q4: no fold at all
    assert wf.xproj_block(dev, "q4", 768, [1536, 1536], 1, 80) is None
    assert wf.xproj_group(dev, 1, 80, 96, "q8") == 0                  # 130m q8: the plain fold
    assert wf.xproj_block(dev, "q8", 768, [1536, 1536], 1, 80) == 16
    dev.xproj_gather = 0                                              # gathering off: no fold
    assert wf.xproj_block(dev, "f16", 2048, [4096, 4096], 1, 160) is None
    assert wf.xproj_block(dev, "f16", 2048, [4096, 4096], 1, 160, rule=False) is not None


def test_the_folded_in_proj_takes_16_threads_a_row(monkeypatch):
    """By rule (weight_format.XPROJ_TPR) the folded in_proj reads each row with 16 threads (at
    mamba-130m's shape: 16 channels a workgroup, 96 shares where the unfolded rule's 32 threads
    a row gave 192); a MAMBAWEB_MATVEC_PLAN entry for the shape still wins."""
    from py_engine.ops import weight_format as wf

    dev = _Dev()
    monkeypatch.delenv("MAMBAWEB_MATVEC_PLAN", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_TPR", raising=False)
    assert wf.choices(dev, "f16", 768, 1536, 1, 2)[1] == 32          # the unfolded rule's
    assert wf.choices(dev, "f16", 768, 1536, 1, 2, xproj=True)[1] == 16
    assert wf.xproj_block(dev, "f16", 768, [1536, 1536], 1, 80) == 16
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", "1536x768=0/32/-")
    assert wf.xproj_block(dev, "f16", 768, [1536, 1536], 1, 80) == 8



@pytest.mark.parametrize("fmt,F", [("f32", 2), ("f16", 3), ("bf16", 8), ("f16", 16), ("q8", 3),
                                   ("q4", 2)])
def test_gathered_totals_are_the_groups_shares_in_order(engine, fmt, F):
    """The gathered dispatch against the plain one on the same inputs: each group's total the
    same f32 bits as its shares added in order, the share words and counts zero again, the
    totals x_proj(u): tests/browser/xproj_gather_cases.py. Groups of 2 and 3 (the last one
    short) of 8 shares, and one group of all of them."""
    _binds_10(engine)
    check_gather(engine, fmt, F)


@pytest.mark.parametrize("fmt,F,R", [("f32", 2, 4), ("q8", 3, 4), ("f16", 2, 300)])
def test_early_xproj_loads_give_the_same_bits(engine, fmt, F, R):
    """x_proj's chunks loaded at the kernel's start (XP_EARLY, weight_format.xproj_early) give
    the plain and the gathered dispatch the same bits as loaded after the rows' sums: 4 chunks
    a block (f32), 1 (q8), and 2 (f16) with R 300 putting x_proj's 332 outputs over the 256
    threads, a thread's second output loading late (q4's one chunk a block: the browser test
    and device_checks)."""
    _binds_10(engine)
    check_early_same_bits(engine, fmt, F, R=R)


def test_early_xproj_decode_equals_the_separate_dispatch(engine):
    """Decode with the gathered fold's chunks loaded early: logits within 1e-5 and the greedy
    tokens of the separate x_proj dispatch."""
    _binds_10(engine)
    check_xproj(engine, FIX / "mamba-d40-tied", "f16", gather=1, pin={"xproj_early": True})


def test_a_stale_share_word_is_replaced(engine):
    """A share word left non-zero before the dispatch (what a reader's give-up and the late
    store after it leave): the store replaces it, the totals are as always."""
    _binds_10(engine)
    check_gather(engine, "f16", 3, stale=True)


def test_group_sizes_and_the_rule(monkeypatch):
    """weight_format.xproj_group: off without a shape to judge (the rule: the test above); 1
    takes the largest power of two up to 16 whose shares fit the staged x's 2,048 values (8 at
    mamba-1.4b's 160 outputs, 16 at 130m's 80), a number that size at most; and with it the
    1.4b fold fits the scan's loads (32 totals, not 256 shares)."""
    from py_engine.ops import weight_format as wf

    dev = _Dev()
    monkeypatch.delenv("MAMBAWEB_XPROJ_GATHER", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_PLAN", raising=False)
    assert wf.xproj_group(dev, 1, 160) == 0
    dev.xproj_gather = 1
    assert [wf.xproj_group(dev, M, O) for M, O in ((1, 160), (1, 80), (2, 160), (1, 512))] == \
        [8, 16, 4, 4]
    for M in (1, 2, 4):
        for O in (36, 80, 160, 512):
            assert wf.xproj_group(dev, M, O) * M * O <= wf.GATHER_VALUES
    assert wf.xproj_block(dev, "f16", 2048, [4096, 4096], 1, 160) == 16
    dev.xproj_gather = 4
    assert wf.xproj_group(dev, 1, 160) == 4
    dev.xproj_gather = 0
    assert wf.xproj_block(dev, "f16", 2048, [4096, 4096], 1, 160) is None
    monkeypatch.setenv("MAMBAWEB_XPROJ_GATHER", "1")
    del dev.xproj_gather
    assert wf.xproj_group(dev, 1, 160) == 8
    monkeypatch.setenv("MAMBAWEB_XPROJ_GATHER", "17")
    with pytest.raises(ValueError, match="MAMBAWEB_XPROJ_GATHER"):
        wf.xproj_group(dev, 1, 160)
