"""tools/bench_topp.py (a draw with top-p alone as passes over the row, over the slices'
candidates, and walking the row) runs on the native backend (lavapipe here: the times are a
CPU's) and reports the three arms: the same id, the candidates used on the peaked row and not
on the flat one, the passes (probe 2) on both."""
import json

from tests.native_support import native as pytestmark  # noqa: F401


def test_bench_topp_reports_the_three_arms(capsys):
    from tools.bench_topp import main
    main(["--V", "5000", "--engine", "native", "--draws", "2"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for row, used in (("peaked", [0, 1]), ("flat", [0, 0])):
        arms = {arm: r[f"{row} {arm}"] for arm in ("passes", "candidates", "row")}
        assert len({tuple(a["id"]) for a in arms.values()}) == 1, arms
        assert arms["passes"]["probe"][1] == 2          # (the row's max, 2): the passes
        assert arms["candidates"]["probe"] == used and arms["row"]["probe"] == [0, 0]
        assert all(a["ms_per_draw"] > 0 for a in arms.values())


def test_bench_topp_times_plain_temperature(capsys):
    """--top-p 1 with top-k 0 (temperature alone): the passes (each slice's max, the draw)
    against the row walk, which the "candidates" arm takes too (nothing to spread over)."""
    from tools.bench_topp import main
    main(["--V", "5000", "--engine", "native", "--draws", "2", "--top-p", "1"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for row in ("peaked", "flat"):
        arms = {arm: r[f"{row} {arm}"] for arm in ("passes", "candidates", "row")}
        assert len({tuple(a["id"]) for a in arms.values()}) == 1, arms
        assert arms["passes"]["probe"][1] == 2
        assert arms["candidates"]["probe"] == arms["row"]["probe"] == [0, 0]
