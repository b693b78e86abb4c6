"""`mambaweb run --model org/name`: the headless tab opens the model from a Hub-layout endpoint
(tests/hub_fixture.py; HF_ENDPOINT or --hub-endpoint) by the generate page's own code path:
same ids as the local folder, transformers' logits for a sharded repo, and a gated or missing
repo ends in one line on stderr."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.hub_fixture import FIXTURES, HubServer, make_repos

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(make_repos(tmp_path_factory.mktemp("hub"))) as h:
        yield h


def run_cli(*args, endpoint=None):
    env = dict(os.environ)
    env.pop("HF_ENDPOINT", None)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, "-m", "tools.cli", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_by_name_equals_the_folder(hub):
    common = ["--prompt", "def f(x):", "--max-new-tokens", "12", "--greedy", "--json"]
    p = run_cli("--model", "mambaweb-test/bytes-tiny", *common, endpoint=hub.url)
    assert p.returncode == 0, p.stderr
    by_name = json.loads(p.stdout)
    assert by_name["model"]["card"]["source"] == f"Hub: mambaweb-test/bytes-tiny at {hub.url}"
    assert f"opening mambaweb-test/bytes-tiny from {hub.url}" in p.stderr
    p = run_cli("--model", str(FIXTURES / "bytes-tiny-stdlib"), *common)
    assert p.returncode == 0, p.stderr
    local = json.loads(p.stdout)
    assert by_name["ids"] == local["ids"] and by_name["text"] == local["text"]
    assert len(by_name["ids"]) == 12


def test_run_sharded_repo_logits(hub, tmp_path):
    exp = np.load(FIXTURES / "mamba2-g2-untied" / "expected.npz")
    p = run_cli("--model", "mambaweb-test/mamba2-sharded@v1", "--hub-endpoint", hub.url,
                "--ids", ",".join(map(str, exp["prompt_ids"].tolist())), "--max-new-tokens", "16",
                "--greedy", "--json", "--logits-out", str(tmp_path / "l.npy"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ids"] == exp["greedy_ids"].tolist()
    assert np.abs(np.load(tmp_path / "l.npy") - exp["logits"]).max() <= 1e-4
    assert out["model"]["card"]["weights"].startswith("safetensors, 2 shards")


def test_run_gated_repo_one_line(hub):
    # (the other failures share this path: tests/unit/test_hub.py, tests/e2e/test_generate_models.py)
    spec, words = "gated-org/secret", "is gated or private (HTTP 401)"
    p = run_cli("--model", spec, "--prompt", "x", endpoint=hub.url)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mambaweb run: {spec}") and words in last, p.stderr
    assert "Traceback" not in p.stderr
