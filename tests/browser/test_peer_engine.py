"""Smoke test of the peer-engine harness (tools/peer_engine.py + web/bench/peer_bench.*): it
imports the pinned npm package in our headless Chromium, runs every workload on a tiny model,
and returns a well-formed, strict-JSON report. What the peer engine itself gets right or wrong
is the bench's business, not this test's: only the report's shape is asserted."""
import json

import pytest

from tools.peer_engine import PINNED_VERSION, measure_peer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {"tiny": {"d_model": 64, "n_layer": 2, "vocab_size": 256, "prefill": [16, 32],
                 "causality_tokens": 8,
                 "decode": {"prompt_lens": [8], "new_tokens": 3},
                 "train": {"batch": 2, "seq_len": 16, "steps": 2, "lr": 1e-3}}}
WORKLOADS = ("init", "causality", "prefill", "decode", "train")


@pytest.fixture(scope="module")
def report(browser, server):
    """The session's Chromium and server (which mounts the peer package at /peer/): a second
    sync Playwright inside one pytest session is refused."""
    class Handle:
        pass
    h = Handle()
    h.browser, h.server = browser, server
    return measure_peer(h, TINY, cap_s=20)


def test_report_is_strict_json_with_the_pinned_version(report):
    json.dumps(report, allow_nan=False)
    assert report["version"] == PINNED_VERSION
    assert "initWebGPU" in report["import"]["exports"]
    assert set(report["configs"]) == {"tiny"}


def test_every_workload_reports_ok_and_numbers_or_a_reason(report):
    cfg = report["configs"]["tiny"]
    for w in WORKLOADS:
        assert isinstance(cfg[w].get("ok"), bool), (w, cfg[w])
    init = cfg["init"]
    assert init["completed"], init
    assert init["n_params"] > 0 and init["total_ms"] > 0
    for n, r in cfg["prefill"]["by_len"].items():
        if r.get("completed"):
            assert r["tokens_per_s"] > 0 and r["buffers"]["created"] > 0, r
        else:
            assert r.get("error") or r.get("skipped"), r
    for r in cfg["decode"]["by_prompt"].values():
        if r.get("completed"):
            assert r["new_tokens"] >= 1 and isinstance(r["reruns_full_sequence"], bool), r
    train = cfg["train"]
    if train.get("completed"):
        assert train["steps_done"] >= 1 and train["ms_per_step"] > 0, train
        assert isinstance(train["forward_arg_check"]["batch_honoured"], bool)


def test_failures_carry_messages(report):
    # Any workload marked not-ok appears in `failures` with its reason, and every captured
    # error names its workload, kind and message.
    cfg = report["configs"]["tiny"]
    failed = [w for w in ("init", "causality", "train") if cfg[w]["ok"] is False]
    for w in failed:
        assert any(line.startswith(f"tiny/{w}:") for line in report["failures"]), (w, report["failures"])
    for e in report["errors"]:
        assert e["workload"] and e["kind"] and e["message"] and e["count"] >= 1
