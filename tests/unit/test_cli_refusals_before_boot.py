"""What the CLI can refuse from its arguments alone it refuses before a browser starts: a
missing adapter file (`run`, `eval`) and a model name nothing serves (`run`). MAMBAWEB_CHROMIUM
points at no browser here, so a refusal that only came after launching one would name the
missing browser instead (no GPU, no browser needed)."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "models" / "mamba-d24-untied"
ENV = {**os.environ, "MAMBAWEB_CHROMIUM": "/nonexistent/chromium"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_missing_adapter_file_is_refused_before_the_browser(tmp_path, command):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text to score " * 20)
    extra = ["--ids", "1,2"] if command == "run" else ["--corpus", str(corpus), "--tokenizer",
                                                       "byte"]
    p = cli(command, "--model", str(FIX), "--adapter", str(tmp_path), *extra)
    assert p.returncode != 0
    assert "adapter_config.json is missing" in p.stderr, p.stderr
    assert "chromium" not in p.stderr.lower() and "Traceback" not in p.stderr


def test_an_unserved_model_name_is_refused_before_the_browser():
    p = cli("run", "--model", "no-such-model", "--ids", "1")
    assert p.returncode == 2, p.stderr
    assert "no model named 'no-such-model'" in p.stderr and "served models:" in p.stderr
    assert "chromium" not in p.stderr.lower()
