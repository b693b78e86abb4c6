"""tools/bench_record (the host's time to record a prefill graph) runs on the native backend
and counts what it recorded: the d256x4 bench shape's real-GPU prefill graph."""
import json

from tests.native_support import native as pytestmark  # noqa: F401
from tools import bench_record


def test_bench_record_reports_the_recorded_graph(capsys):
    assert bench_record.main(["--model", "d256x4", "--weights", "f16", "--tokens", "16",
                              "--reps", "3"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["dispatches"] > 4 * 10            # 4 layers, each more than ten dispatches
    assert 0 < r["min_ms"] <= r["median_ms"] and r["us_per_dispatch"] > 0
