"""tools/bench_topp.py (a draw with top-p alone over the slices' candidates and walking the row)
runs on the native backend (lavapipe here: the times are a CPU's) and reports both arms: the
same id, the candidates used on the peaked row and not on the flat one."""
import json

from tests.native_support import native as pytestmark  # noqa: F401


def test_bench_topp_reports_both_arms(capsys):
    from tools.bench_topp import main
    main(["--V", "5000", "--engine", "native", "--draws", "2"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for row, used in (("peaked", [0, 1]), ("flat", [0, 0])):
        on, off = r[f"{row} spread=True"], r[f"{row} spread=False"]
        assert on["id"] == off["id"]
        assert on["probe"] == used and off["probe"] == [0, 0]
        assert on["ms_per_draw"] > 0 and off["ms_per_draw"] > 0
