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


@pytest.mark.parametrize("command", ["eval", "finetune"])
def test_an_unknown_weight_format_is_refused_naming_the_choices(tmp_path, command):
    extra = ["--corpus", "c.txt"] if command == "eval" else ["--model", "m", "--data", "c.txt", "--out",
                                                             str(tmp_path / "o")]
    p = cli(command, *extra, "--weights", "int4")
    assert p.returncode == 2, p.stderr
    assert "unknown weight format 'int4': choose one of f32, f16, bf16, q8, q4" in p.stderr
    assert "chromium" not in p.stderr.lower()


def test_weight_format_names_people_use():
    """int8 (the issue's and most tools' name for 8-bit with a scale per row) is q8; fp16 and
    fp32 are f16 and f32; case does not matter."""
    from py_engine.ops.weight_format import format_named
    assert [format_named(n) for n in ("int8", "Q4", " fp16", "FP32", "bf16")] == \
        ["q8", "q4", "f16", "f32", "bf16"]
    with pytest.raises(ValueError, match="unknown weight format 'int4'"):
        format_named("int4")
