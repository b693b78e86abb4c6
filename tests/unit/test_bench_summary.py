"""tools/bench_summary: the README's GPU table rows from a bench report, and from the stderr
lines of a bench that a timeout stopped before its report."""
import json

from tools import bench_summary


def _format(fmt, tok_s, gpu_ms, pct=None, bound=None):
    d = {"tokens_per_s": tok_s, "gpu_ms_per_token": gpu_ms, "pct_of_read_ceiling": 48.7,
         "dispatches_per_token": 148}
    if pct is not None:
        d.update(pct_of_read_ceiling_at_gpu_time=pct, bound_by=bound)
    return {"weights": fmt, "decode": d,
            "prefill": [{"prompt": 64, "tokens_per_s": 825.5}, {"prompt": 256, "skipped": "cap"},
                        {"prompt": 1024, "tokens_per_s": 10447.0}]}


def test_rows_of_a_report(tmp_path):
    f16 = _format("f16", 549.5, 1.75287, 50.59, "gpu")
    report = {"ceilings": {"read": {"gb_per_s": 3161.97}},
              "model": {"mamba1_4b": dict(f16, formats={"f16": f16})}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    out = bench_summary.summary([str(path)]).splitlines()
    assert out[0] == f"{path}: read ceiling 3,162 GB/s, 1 row(s)"
    assert out[-1] == ("| mamba1_4b f16 | 826 / -- / 10,447 | 550 | 1.753 | 50.6 (48.7) | 148 "
                       "| gpu |")


def test_rows_of_a_stopped_run_come_from_its_stderr(tmp_path):
    """The ceiling and each finished format; a variant's rows and a line cut off are left out."""
    lines = ["Dawn warning: something",
             'bench --dawn: ceilings {"read": {"gb_per_s": 0.87}}',
             "bench --dawn: model d256x4 f32 " + json.dumps(_format("f32", 9.2, 112.0)),
             "bench --dawn: model d256x4 variant x f32 " + json.dumps(_format("f32", 1, 1)),
             'bench --dawn: model d256x4 q4 {"weights": "q4", "dec']
    path = tmp_path / "run.err"
    path.write_text("\n".join(lines) + "\n")
    ceiling, rows = bench_summary.runs_of(str(path))
    assert ceiling == 0.87 and [(m, f) for m, f, _ in rows] == [("d256x4", "f32")]
    out = bench_summary.summary([str(path)]).splitlines()
    assert out[0] == f"{path}: read ceiling 0.87 GB/s, 1 row(s)"
    assert out[-1] == "| d256x4 f32 | 826 / -- / 10,447 | 9 | 112.000 | -- (48.7) | 148 | -- |"


def test_a_missing_file_is_one_line_and_exit_1(tmp_path, capsys):
    assert bench_summary.main([str(tmp_path / "none.json")]) == 1
    assert "bench_summary:" in capsys.readouterr().err
