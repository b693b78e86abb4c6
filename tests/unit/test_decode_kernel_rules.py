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


@pytest.mark.parametrize("fmt, N, staged", [
    ("q4", 8192, True), ("q4", 512, True), ("q4", 160, False), ("q8", 3072, True),
    ("f16", 50280, True), ("bf16", 8192, True), ("f16", 2048, False), ("f32", 50280, False)])
def test_staging_rule(fmt, N, staged):
    assert wf.stage_x(_Dev(), 1, None, fmt, N) is staged
    assert wf.stage_x(_Dev(), 2, None, fmt, N) is False         # one x row only


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


@pytest.mark.parametrize("N, M, rpt", [(50280, 1, 4), (8192, 1, 4), (4096, 1, 2), (2048, 1, 1),
                                       (8192, 2, 2), (8192, 4, 1)])
def test_rows_per_thread(N, M, rpt):
    assert wf.rows_per_thread(_Dev(), N, M) == rpt


def test_staging_env_refuses_other_values(monkeypatch):
    monkeypatch.setenv("MAMBAWEB_MATVEC_STAGE", "yes")
    with pytest.raises(ValueError, match="MAMBAWEB_MATVEC_STAGE must be '1' or '0'"):
        wf.stage_x(_Dev(), 1, None, "q4", 8192)


def test_plan_sets_choices_per_matrix(monkeypatch):
    """MAMBAWEB_MATVEC_PLAN (bench variants): per shape, for one format or all; RPT/TPR 0 keep
    the rule's choice; other shapes and formats keep the rule; a malformed entry is refused by
    name with the form it wants."""
    assert wf.planned("q4", 4096, 2048) is None
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", "q4:4096x2048=2/16/1; 50280x2048=0/32/0")
    assert wf.planned("q4", 4096, 2048) == (2, 16, True)
    assert wf.planned("f16", 4096, 2048) is None
    assert wf.planned("f16", 50280, 2048) == (None, 32, False)
    assert wf.planned("q4", 2048, 4096) is None
    monkeypatch.setenv("MAMBAWEB_MATVEC_PLAN", "q4:4096x2048=2/16")
    with pytest.raises(ValueError, match=r"not \[fmt:\]NxK=RPT/TPR/STAGE"):
        wf.planned("q4", 4096, 2048)
