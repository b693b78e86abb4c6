"""Bad files through the CLI: `mambaweb convert`, `mambaweb run`, `mambaweb pretrain` exit
non-zero with one plain sentence on stderr (prefixed with the command), print no Python
traceback, and leave no output file behind. The cases refused before a browser starts run here;
tests/browser/test_bad_files_browser.py covers `run` on a folder the engine itself refuses."""
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_bad_files import BASE, FIXTURES, copy_model, edit_config
from tools import cli, convert_host


def mambaweb(*args, timeout=120):
    """Run the real command in a fresh interpreter: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "tools.cli", *map(str, args)], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def assert_one_clear_line(rc, err, prefix, words):
    assert rc != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    for w in words:
        assert w in lines[0], (w, err)


@pytest.fixture
def out_dir(tmp_path):
    return tmp_path / "out"


# --- mambaweb convert ---------------------------------------------------------------------------

def _truncated_safetensors(d):
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _shape_mismatch(d):
    edit_config(d, state_size=16)


def _mbjs_bad_crc(tmp_path):
    path = tmp_path / "m.bin"
    convert_host.convert(FIXTURES / BASE, path, log=lambda *a: None)
    blob = bytearray(path.read_bytes())
    blob[300] ^= 0xFF
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize("case", ["truncated", "shape", "mbjs-crc", "missing-src"])
def test_convert_refuses_with_one_line_and_writes_nothing(tmp_path, out_dir, case):
    if case == "mbjs-crc":
        src, words = _mbjs_bad_crc(tmp_path), ["m.bin", "CRC mismatch"]
    elif case == "missing-src":
        src, words = tmp_path / "nowhere", ["nowhere", "neither an HF model folder nor an MBJS"]
    else:
        src = copy_model(tmp_path)
        if case == "truncated":
            _truncated_safetensors(src)
            words = ["model.safetensors", "backbone.norm_f.weight", "run past the end"]
        else:
            _shape_mismatch(src)
            words = ["backbone.layers.0.mixer.A_log: expected shape [80, 16], found [80, 8]"]
    rc, out, err = mambaweb("convert", src, out_dir)
    assert rc == 2
    # the shape case lists every mismatch, one per line under the first: allow that form
    if case == "shape":
        assert "Traceback" not in err and err.startswith("mambaweb convert: ")
        assert all(w in err for w in words), err
    else:
        assert_one_clear_line(rc, err, "mambaweb convert: ", words)
    assert not out_dir.exists()


def test_convert_bad_config_option_is_a_message_not_a_traceback(tmp_path, out_dir):
    bad = tmp_path / "settings.json"
    bad.write_text("{not json")
    rc, _, err = mambaweb("convert", FIXTURES / BASE, out_dir, "--config", bad)
    assert_one_clear_line(rc, err, "mambaweb convert: ", ["settings.json", "not valid JSON"])
    assert not out_dir.exists()


@pytest.mark.parametrize("target", ["hf", "mbjs"])
def test_convert_failing_mid_write_leaves_nothing(tmp_path, monkeypatch, capsys, target):
    """A write that fails part-way (here: the disk fills after the first 4 KiB) removes every
    partial file and the folder it created; an existing model in DST is left as it was."""
    real = convert_host.op_chunks

    def filling_disk(op, io):
        written = 0
        for piece in real(op, io):
            written += len(piece)
            if written > 4096:
                raise OSError(28, "No space left on device")
            yield piece
    monkeypatch.setattr(convert_host, "op_chunks", filling_disk)
    dst = tmp_path / "new" / ("model.bin" if target == "mbjs" else "model")
    rc = cli.main(["convert", str(FIXTURES / BASE), str(dst)])
    err = capsys.readouterr().err
    assert_one_clear_line(rc, err, "mambaweb convert: ", ["No space left on device"])
    assert not (tmp_path / "new").exists()

    if target == "hf":           # an existing output folder keeps its old files untouched
        old = tmp_path / "old"
        shutil.copytree(FIXTURES / BASE, old)
        before = {p.name: p.read_bytes() for p in old.iterdir()}
        assert cli.main(["convert", str(FIXTURES / BASE), str(old), "--dtype", "f16"]) == 2
        assert {p.name: p.read_bytes() for p in old.iterdir()} == before


# --- mambaweb run (cases refused before the browser starts) --------------------------------------

def test_run_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x00\x01" * 500)
    rc, _, err = mambaweb("run", "--model", junk, "--ids", "1,2")
    assert_one_clear_line(rc, err, str(junk), ["not an MBJS file and not a folder"])


def test_run_refuses_a_corrupt_mbjs(tmp_path):
    rc, _, err = mambaweb("run", "--model", _mbjs_bad_crc(tmp_path), "--ids", "1,2")
    assert_one_clear_line(rc, err, "mambaweb run: ", ["m.bin", "CRC mismatch"])


def test_run_refuses_a_folder_without_config(tmp_path):
    d = copy_model(tmp_path)
    (d / "config.json").unlink()
    rc, _, err = mambaweb("run", "--model", d, "--ids", "1,2")
    assert_one_clear_line(rc, err, str(d), ["no config.json here"])


# --- mambaweb pretrain (corpus and tokenizer are read before the browser starts) -----------------

def test_pretrain_refuses_a_corpus_of_binary_files(tmp_path, out_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + bytes(64))
    (corpus / "b.txt").write_bytes("naïve".encode("utf-16"))
    rc, _, err = mambaweb("pretrain", "--corpus", corpus, "--steps", "1", "--out", out_dir)
    assert_one_clear_line(rc, err, "mambaweb pretrain: no usable text in the corpus",
                          ["a.png: binary (a NUL byte at offset 8)", "b.txt: binary"])
    assert not out_dir.exists()


def test_pretrain_refuses_a_bad_tokenizer_before_starting(tmp_path, out_dir):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    tok = json.loads((REPO / "tests/fixtures/tokenizers/gpt2.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    rc, _, err = mambaweb("pretrain", "--corpus", corpus, "--steps", "1", "--out", out_dir,
                          "--tokenizer", tmp_path / "tokenizer.json")
    assert_one_clear_line(rc, err, "mambaweb pretrain: ",
                          ["tokenizer.json", "pre_tokenizer type 'Whitespace' is not supported"])
    assert not out_dir.exists()


def test_pretrain_refuses_a_missing_corpus(tmp_path, out_dir):
    rc, _, err = mambaweb("pretrain", "--corpus", tmp_path / "nope", "--steps", "1",
                          "--out", out_dir)
    assert_one_clear_line(rc, err, "mambaweb pretrain: ", ["nope", "does not exist"])
