"""py_engine/benchmarks/pipeline_model: what Generator.stream's pipeline allows a stream, from
its parts' times -- checked against the pipeline worked out by hand in its two regimes (the GPU
the slower part, the host the slower part), and on the mamba-130m stream it was made for."""
import pytest

from py_engine.benchmarks.pipeline_model import pipeline_report, stream_ms


def test_gpu_bound_stream_waits_only_for_the_first_encode_and_the_last_readback():
    # groups of 4, 12 tokens: the GPU starts after the first group's encode (4 x 1 ms), then
    # never waits (the host is 4x faster and keeps 3 groups queued); the last ids a readback
    # after the GPU's 12 x 4 ms
    total, busy = stream_ms(12, host_ms=1.0, gpu_ms=4.0, readback_ms=0.5, depth=3, group=4)
    assert total == pytest.approx(4 + 12 * 4 + 0.5)
    assert busy == pytest.approx(48 / total)


def test_host_bound_stream_is_the_host_time_plus_the_last_group():
    # the GPU 4x faster: the host encodes all 12 steps back to back (it never waits on ids,
    # which arrive before it needs them), the last group then runs and is read back
    total, busy = stream_ms(12, host_ms=4.0, gpu_ms=1.0, readback_ms=0.5, depth=3, group=4)
    assert total == pytest.approx(12 * 4 + 4 * 1 + 0.5)
    assert busy == pytest.approx(12 / total)


def test_depth_one_serialises_host_gpu_and_readback():
    total, _ = stream_ms(8, host_ms=1.0, gpu_ms=2.0, readback_ms=0.5, depth=1, group=4)
    assert total == pytest.approx(2 * (4 + 8 + 0.5))


def test_the_ramp_idles_the_gpu_while_the_host_catches_up():
    # ramp 1, 2, then 4s: the small first group starts the GPU early, the ramp's growth keeps
    # the host's next encode about as long as the GPU's current group
    flat, _ = stream_ms(64, host_ms=0.35, gpu_ms=0.47, readback_ms=0.18, depth=3, group=16)
    ramped, busy = stream_ms(64, host_ms=0.35, gpu_ms=0.47, readback_ms=0.18, depth=3,
                             group=16, ramp=(1, 2, 3, 4, 6, 8, 12))
    assert ramped < flat
    assert 64 * 0.47 < ramped < 64 * 0.47 + 16 * 0.35
    assert 0.9 < busy < 1.0


def test_the_mamba130m_stream_it_was_made_for():
    """2026-12-06, an H100 through Dawn (docs/gpu_journal.md, thirty-ninth session): host 0.343,
    a lone group's GPU 0.4724 ms a step, readback 0.178; the stream took 0.498 ms a token."""
    decode = {"tokens": 256, "group": 16, "ms_per_token": 0.4977,
              "host_ms_per_token": 0.343, "gpu_ms_per_token": 0.4724, "readback_ms": 0.178}
    r = pipeline_report(decode, depth=3, ramp=(1, 2, 3, 4, 6, 8, 12))
    assert r["pipeline_ms_per_token"] == pytest.approx(0.477, abs=0.002)
    assert 0.98 < r["pipeline_gpu_busy"] < 0.995
    assert r["stream_over_pipeline"] == pytest.approx(1.043, abs=0.005)


def test_no_report_for_time_sized_groups_or_missing_parts():
    base = {"tokens": 8, "group": 16, "ms_per_token": 1.0, "host_ms_per_token": 0.1,
            "gpu_ms_per_token": 0.2, "readback_ms": 0.1}
    assert pipeline_report(dict(base, group="auto"), 3, ()) == {}
    assert pipeline_report({k: v for k, v in base.items() if k != "readback_ms"}, 3, ()) == {}
    assert set(pipeline_report(base, 3, ())) == {"pipeline_ms_per_token", "pipeline_gpu_busy",
                                                 "stream_over_pipeline"}


def test_parts_of_no_time_give_no_time():
    assert stream_ms(8, 0.0, 0.0, 0.0, depth=3, group=4) == (0.0, 0.0)
    assert stream_ms(0, 1.0, 1.0, 1.0, depth=3, group=4) == (0.0, 0.0)
