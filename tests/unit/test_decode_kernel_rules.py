"""The rules that pick the decode mat-vec's variant per matrix (py_engine/ops/weight_format.py),
as measured on an H200 (tools/sweep_matvec.py): staging x in workgroup memory for narrow formats
on tall matrices, rows per thread by height, and the overrides tests and sweeps use."""
import pytest

from py_engine.ops import weight_format as wf


class _Dev:
    pass


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_MATVEC_STAGE", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_RPT", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_PLAN", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_TPR", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_GROUPS", raising=False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_RULE", raising=False)


@pytest.mark.parametrize("fmt, N, staged", [
    ("q4", 8192, True), ("q4", 512, True), ("q4", 160, False), ("q8", 3072, True),
    ("f16", 50280, True), ("bf16", 8192, True), ("f16", 2048, False), ("f32", 50280, False)])
def test_staging_rule(fmt, N, staged):
    assert wf.stage_x(_Dev(), 1, None, fmt, N) is staged
    assert wf.stage_x(_Dev(), 2, None, fmt, N) is False         # one x row only


@pytest.mark.parametrize("fmt, N, tpr, staged", [
    ("f16", 4096, 16, True), ("f32", 50280, 16, True), ("bf16", 3072, 32, True),
    ("f16", 2048, 64, False), ("f32", 768, 128, False), ("q4", 160, 16, False),
    ("q4", 2048, 64, True)])
def test_staging_rule_by_threads_per_row(fmt, N, tpr, staged):
    """What the engine asks (matvec always knows its TPR): f32/f16/bf16 staged at TPR <= 32,
    q4/q8 from 512 rows whatever the TPR."""
    assert wf.stage_x(_Dev(), 1, None, fmt, N, tpr) is staged


def test_staging_overrides(monkeypatch):
    d = _Dev()
    assert wf.stage_x(d, 1, True, "f32", 16)
    d.matvec_stage = False
    assert not wf.stage_x(d, 1, None, "q4", 8192)
    d.matvec_stage = None
    monkeypatch.setenv("MAMBAWEB_MATVEC_STAGE", "0")
    assert not wf.stage_x(d, 1, None, "q4", 8192)
    monkeypatch.setenv("MAMBAWEB_MATVEC_STAGE", "1")
    assert wf.stage_x(d, 1, None, "f32", 16)


@pytest.mark.parametrize("fmt, N, M, rpt", [
    ("f32", 50280, 1, 4), ("f32", 8192, 1, 4), ("f32", 4096, 1, 1), ("f16", 4096, 1, 1),
    ("q4", 4096, 1, 2), ("q8", 2048, 1, 2), ("q4", 1536, 1, 1), ("f32", 8192, 2, 2),
    ("f32", 8192, 4, 1), ("q4", 4096, 4, 1)])
def test_rows_per_thread(fmt, N, M, rpt):
    assert wf.rows_per_thread(_Dev(), N, M, fmt=fmt) == rpt


def test_rows_per_thread_overrides(monkeypatch):
    d = _Dev()
    assert wf.rows_per_thread(d, 64, 1, override=4) == 4
    assert wf.rows_per_thread(d, 64, 2, override=4) == 2          # RPT * M <= 4
    d.matvec_rpt = 2
    assert wf.rows_per_thread(d, 64, 1) == 2
    d.matvec_rpt = None
    monkeypatch.setenv("MAMBAWEB_MATVEC_RPT", "4")
    assert wf.rows_per_thread(d, 64, 1, fmt="f16") == 4


def test_staging_env_refuses_other_values(monkeypatch):
    monkeypatch.setenv("MAMBAWEB_MATVEC_STAGE", "yes")
    with pytest.raises(ValueError, match="MAMBAWEB_MATVEC_STAGE must be '1' or '0'"):
        wf.stage_x(_Dev(), 1, None, "q4", 8192)


def test_plan_sets_choices_per_matrix(monkeypatch):
    """MAMBAWEB_MATVEC_PLAN (bench variants): per shape, for one format or all; RPT/TPR 0 and
    STAGE - keep the rule's choice; other shapes and formats keep the rule; given values win
    over the plan; empty entries are skipped."""
    d = _Dev()
    assert wf.planned("q4", 4096, 2048) is None
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", "q4:4096x2048=2/16/1; 50280x2048=0/32/-;")
    assert wf.planned("q4", 4096, 2048) == (2, 16, True)
    assert wf.planned("f16", 4096, 2048) is None
    assert wf.planned("f16", 50280, 2048) == (None, 32, None)
    assert wf.planned("q4", 2048, 4096) is None
    assert wf.choices(d, "q4", 2048, 4096, 1, 2) == (2, 16, True)
    assert wf.choices(d, "q4", 2048, 4096, 1, 2, tpr=64) == (2, 64, True)
    rpt = wf.rows_per_thread(d, 50280, 1, fmt="f16")                 # the rule's RPT, plan's TPR
    assert wf.choices(d, "f16", 2048, 50280, 1) == (rpt, 32, True)   # staged by rule at TPR 32


@pytest.mark.parametrize("bad", ["q4:4096x2048=2/16", "q5:4096x2048=2/16/1", "4096x2048=3/16/1",
                                 "4096x2048=1/24/1", "4096x2048=1/512/1", "4096x2048=1/16/2",
                                 "4096=1/16/1"])
def test_plan_refuses_what_the_kernel_cannot_run(monkeypatch, bad):
    """A TPR that is no power of two in 16..256 would sum wrongly (the lanes' halving tree) or
    not at all; RPT is 1, 2 or 4: refused by name, with the form wanted."""
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", bad)
    with pytest.raises(ValueError, match=r"is not \[fmt:\]NxK=RPT/TPR/STAGE with fmt one of"):
        wf.planned("q4", 4096, 2048)


@pytest.mark.parametrize("fmt, G, N, K, want", [
    # the chain sweep's fastest (or within a few %) per shape, H200, 2026-12-01
    ("f16", 2, 4096, 2048, (1, 16, True)),      # mamba-1.4b in_proj (x and z halves, conv)
    ("q4", 2, 4096, 2048, (2, 16, True)),
    ("f16", 1, 2048, 4096, (1, 64, False)),     # its out_proj (the rule; SHAPE_PLANS: 2/64)
    ("q4", 1, 2048, 4096, (2, 64, True)),
    ("f16", 1, 160, 4096, (1, 256, False)),     # its x_proj
    ("q4", 1, 50280, 2048, (4, 16, True)),      # the LM head
    ("f16", 2, 1536, 768, (1, 32, True)),       # mamba-130m in_proj
    ("f16", 1, 768, 1536, (1, 128, False)),     # its out_proj
    ("q4", 1, 768, 1536, (1, 64, True)),
    ("f32", 2, 4096, 2048, (1, 16, True)),
    ("f32", 1, 768, 1536, (1, 128, False)),
    ("f32", 1, 50280, 768, (4, 16, True)),
])
def test_rules_per_shape(fmt, G, N, K, want):
    d = _Dev()
    rpt = wf.rows_per_thread(d, N, 1, fmt=fmt)
    tpr = wf.rows_per_thread_group(fmt, K, N, rpt, d, G)
    assert (rpt, tpr, wf.stage_x(d, 1, None, fmt, N, tpr)) == want


def test_shape_plans_take_their_shape_only(monkeypatch):
    """SHAPE_PLANS: mamba-1.4b's f16 out_proj (2,048 x 4,096) at two rows a thread, 64 threads a
    row, unstaged -- that format and shape only; a MAMBAWEB_MATVEC_PLAN entry for it wins, and
    MAMBAWEB_MATVEC_RULE=older gives the rule before."""
    d = _Dev()
    monkeypatch.delenv("MAMBAWEB_MATVEC_PLAN", raising=False)
    assert wf.choices(d, "f16", 4096, 2048, 1) == (2, 64, False)
    assert wf.choices(d, "bf16", 4096, 2048, 1) == (1, 64, False)
    assert wf.choices(d, "f32", 4096, 2048, 1) == (1, 64, False)
    assert wf.choices(d, "f16", 2048, 4096, 1, 2) == (1, 16, True)       # in_proj: the rule
    assert wf.choices(d, "f16", 4096, 2048, 2) == (2, 64, False)         # two sequences: RPT*M 4
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", "f16:2048x4096=1/64/0")
    assert wf.choices(d, "f16", 4096, 2048, 1) == (1, 64, False)
    monkeypatch.delenv("MAMBAWEB_MATVEC_PLAN")
    monkeypatch.setenv("MAMBAWEB_MATVEC_RULE", "older")
    assert wf.choices(d, "f16", 4096, 2048, 1) == _rule_before("f16", 4096, 2048, 1, 1)


def test_groups_count_every_matrix_of_the_call():
    """A call's G matrices share the grid (z): twice the matrices, twice the rows for the same
    workgroups -- the TPR halves."""
    d = _Dev()
    assert wf.rows_per_thread_group("f16", 2048, 4096, 1, d, 1) == 32
    assert wf.rows_per_thread_group("f16", 2048, 4096, 1, d, 2) == 16


def _rule_before(fmt, K, N, M, G):
    """The decode mat-vec's rule as it was before the chain sweep (b3884e9), frozen here:
    (rpt, tpr, staged); G did not count."""
    rpt = 1
    while rpt < 4 and rpt * 2 * M <= 4 and N >= 2048 * rpt * 2:
        rpt *= 2
    chunks = K // (128 // wf.BITS[fmt])
    tpr = 16
    while tpr < 256 and tpr < chunks and N * tpr < 512 * 256 * rpt:
        tpr *= 2
    staged = M == 1 and (N >= 512 if fmt in ("q4", "q8") else fmt in ("f16", "bf16") and N >= 8192)
    return rpt, tpr, staged


def test_older_rule_is_the_rule_before(monkeypatch):
    """MAMBAWEB_MATVEC_RULE=older gives exactly the rule before, on a grid of shapes."""
    d = _Dev()
    monkeypatch.setenv("MAMBAWEB_MATVEC_RULE", "older")
    for fmt in wf.FORMATS:
        for K in (256, 768, 2048, 4096, 8192):
            for N in (16, 80, 160, 512, 768, 1536, 2048, 3072, 4096, 6720, 8192, 16384, 50280):
                for M in (1, 2, 4):
                    for G in (1, 2, 3):
                        assert wf.choices(d, fmt, K, N, M, G) == _rule_before(fmt, K, N, M, G), \
                            (fmt, K, N, M, G)


def test_older_rule_for_side_by_side(monkeypatch):
    """MAMBAWEB_MATVEC_RULE=older: the one rule before the chain sweep (RPT 2 from 4,096 rows,
    512 workgroups per matrix, staging by row count: q4/q8 from 512, f16/bf16 from 8,192, f32
    never); other values are refused by name."""
    d = _Dev()
    monkeypatch.setenv("MAMBAWEB_MATVEC_RULE", "older")
    for fmt in ("f32", "f16", "q4"):
        assert wf.rows_per_thread(d, 4096, 1, fmt=fmt) == 2
        assert wf.rows_per_thread_group(fmt, 2048, 4096, 2, d, 2) == 64
    assert wf.stage_x(d, 1, None, "f16", 4096, 16) is False
    assert wf.stage_x(d, 1, None, "f32", 50280, 16) is False
    assert wf.stage_x(d, 1, None, "q4", 4096, 64) is True
    monkeypatch.setenv("MAMBAWEB_MATVEC_RULE", "new")
    with pytest.raises(ValueError, match="MAMBAWEB_MATVEC_RULE must be 'tuned' or 'older'"):
        wf.rows_per_thread(d, 4096, 1, fmt="f16")


def test_sweep_plan_is_what_the_engine_reads(monkeypatch):
    """tools/sweep_matvec.py's last line: the best choice per (format, N, K) at one PREFETCH
    level as a MAMBAWEB_MATVEC_PLAN, which planned() then reads back; rows timed against the
    engine's choice just before them rank by that ratio, not by their time (clocks drift)."""
    from tools.sweep_matvec import plan_of
    row = lambda f, n, k, rpt, tpr, st, us, pf=0: dict(format=f, N=n, K=k, rpt=rpt, tpr=tpr,
                                                       stage=st, gpu_us=us, prefetch=pf)
    plan = plan_of([row("f16", 4096, 2048, 2, 64, False, 23.1), row("f16", 4096, 2048, 1, 16, True, 15.2),
                    row("f16", 4096, 2048, 1, 16, True, 12.0, pf=2), row("q4", 2048, 4096, 2, 64, True, 11.2)])
    assert plan == "f16:4096x2048=1/16/1;q4:2048x4096=2/64/1"
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", plan)
    assert wf.planned("f16", 4096, 2048) == (1, 16, True)
    assert wf.planned("q4", 2048, 4096) == (2, 64, True)
    ratio = lambda r, q: dict(r, ratio=q)
    rows = [ratio(row("f32", 2048, 4096, 1, 64, False, 20.0, pf=3), 1.10),   # faster, but 10% over its reference
            ratio(row("f32", 2048, 4096, 2, 128, False, 30.0, pf=3), 0.90),  # slower, but 10% under its own
            ratio(row("f32", 2048, 4096, 2, 16, True, 10.0, pf=0), 0.50)]    # another level
    assert plan_of(rows, 3) == "f32:2048x4096=2/128/0"
    assert plan_of(rows) == "f32:2048x4096=2/16/1"
