"""`--arch` / `--pattern` on every entry point, without a browser: generate-bin and pretrain take
`--arch` (with `--family` as its alias, and a `--pattern` alone meaning hybrid); the fresh model
`run` / `train-check` build from them is generate-bin's, byte for byte; and given with a
checkpoint (`run`, `train-check`, `convert`) they refuse one of another schedule in one sentence
naming both, before any browser starts. (The fresh model running and training in the tab:
tests/browser/test_cli_run.py, tests/browser/test_training_cli.py.)"""
import argparse
import json

import pytest

from py_engine.app.arch import arch_of, mismatch, own_pattern
from py_engine.models.config import MambaConfig
from tests.conftest import REPO
from tools import arch_options
from tools.cli import main as cli

MODELS = REPO / "tests" / "fixtures" / "models"
HYBRID = MODELS / "nemotronh-mamf-tied"          # layers M * - M
MAMBA2 = MODELS / "mamba2-g2-untied"
MAMBA1 = MODELS / "mamba-d40-tied"


def _cfg(folder):
    return MambaConfig.from_hf_dict(json.loads((folder / "config.json").read_text()))


def test_arch_is_the_family_option_and_a_pattern_alone_means_hybrid(tmp_path, capsys):
    shape = ["--size", "tiny", "--d-model", "32", "--vocab-size", "64", "--seed", "4"]
    outs = {}
    for tag, flags in (("family", ["--family", "hybrid", "--pattern", "M*M-"]),
                       ("arch", ["--arch", "hybrid", "--pattern", "M*M-"]),
                       ("alone", ["--pattern", "M*M-"])):
        assert cli(["generate-bin", *flags, *shape, "--out", str(tmp_path / tag)]) == 0
        outs[tag] = {f: (tmp_path / tag / f).read_bytes()
                     for f in ("config.json", "model.safetensors")}
    assert "layers M*M- saved as NemotronHForCausalLM" in capsys.readouterr().out
    assert outs["family"] == outs["arch"] == outs["alone"]
    assert cli(["generate-bin", "--arch", "mamba2", "--pattern", "M*", "--out",
                str(tmp_path / "x")]) == 2
    assert "a layer pattern needs the hybrid family" in capsys.readouterr().err
    # pretrain parses the same spelling (it fails later, on the missing corpus, not on --arch)
    assert cli(["pretrain", "--arch", "hybrid", "--pattern", "MM*M", "--corpus",
                str(tmp_path / "none"), "--out", str(tmp_path / "p")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _run_parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    from tools import cmd_run, cmd_train_check
    cmd_run.register(sub)
    cmd_train_check.register(sub)
    return p


def test_fresh_model_is_generate_bins_model(tmp_path):
    """run / train-check --arch hybrid --pattern ... --seed S write what generate-bin writes."""
    flags = ["--arch", "hybrid", "--pattern", "M*M-", "--size", "tiny", "--d-model", "32",
             "--vocab-size", "64", "--seed", "7"]
    assert cli(["generate-bin", *flags, "--out", str(tmp_path / "gen")]) == 0
    for cmd in (["run", "--ids", "1"], ["train-check", "--ids", "x.npy", "--out", "o"]):
        args = _run_parser().parse_args(cmd + flags)
        assert arch_options.wants_fresh(args)
        folder = arch_options.write_fresh(tmp_path / cmd[0], arch_options.fresh_config(args),
                                          args.seed)
        for f in ("config.json", "model.safetensors"):
            assert (folder / f).read_bytes() == (tmp_path / "gen" / f).read_bytes(), (cmd[0], f)


def test_schedule_of_a_checkpoint():
    h, m2, m1 = _cfg(HYBRID), _cfg(MAMBA2), _cfg(MAMBA1)
    assert (arch_of(h), arch_of(m2), arch_of(m1)) == ("hybrid", "mamba2", "mamba1")
    assert own_pattern(h) == "M*-M" and own_pattern(m2) == "MM" and own_pattern(m1) is None
    assert mismatch(h, "hybrid", "M*-M") is None and mismatch(h, None, "M*-M") is None
    assert mismatch(m2, "mamba2", "MM") is None and mismatch(m1, "mamba1") is None
    assert mismatch(h, "mamba2") == ("the checkpoint is a hybrid model (1 × mamba2, 1 × attention, "
                                     "1 × mlp, 1 × mamba2 (pattern M*-M)), not --arch mamba2: drop "
                                     "--arch or give --arch hybrid")
    msg = mismatch(h, "hybrid", "MM*M", source="m")
    assert msg.startswith("m has layers 1 × mamba2, 1 × attention, 1 × mlp, 1 × mamba2 (pattern "
                          "M*-M), not the 2 × mamba2, 1 × attention, 1 × mamba2 (pattern MM*M) of "
                          "--pattern MM*M") and msg.endswith("give --pattern M*-M")
    assert "not --arch hybrid" in mismatch(m2, "hybrid")
    # a Mamba-1 model has no pattern letter of its own (M is Mamba-2)
    assert "no --pattern (its layers have no pattern letter)" in mismatch(m1, None, "MM")
    with pytest.raises(ValueError, match=r"unknown layer letters \['x'\]"):
        mismatch(h, None, "MxM")


def test_a_checkpoint_of_another_schedule_is_refused_by_every_command(tmp_path, capsys):
    """One sentence naming both schedules, exit 2, no browser started, nothing written."""
    import numpy as np
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3]], np.int64))
    cases = [
        ["run", "--model", str(HYBRID), "--ids", "1,2", "--arch", "mamba2"],
        ["run", "--model", str(HYBRID), "--ids", "1,2", "--pattern", "MM*M"],
        ["train-check", "--model", str(HYBRID), "--ids", str(tmp_path / "ids.npy"),
         "--out", str(tmp_path / "tc"), "--pattern", "MM*M"],
        ["convert", str(HYBRID), str(tmp_path / "conv"), "--arch", "hybrid", "--pattern", "MM*M"],
        ["convert", str(MAMBA2), str(tmp_path / "conv2"), "--arch", "hybrid"],
    ]
    for argv in cases:
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert ("not the 2 × mamba2, 1 × attention, 1 × mamba2 (pattern MM*M) of --pattern MM*M"
                in err or "not --arch" in err), err
        assert "Traceback" not in err
    assert not (tmp_path / "conv").exists() and not (tmp_path / "conv2").exists()
    assert not (tmp_path / "tc").exists()
    # the matching schedule converts; shape flags with --model are refused by name
    assert cli(["convert", str(HYBRID), str(tmp_path / "ok"), "--arch", "hybrid",
                "--pattern", "M*-M"]) == 0
    assert cli(["run", "--model", str(HYBRID), "--ids", "1", "--d-model", "64"]) == 2
    assert "--d-model shape a fresh --arch/--pattern model, not --model" in capsys.readouterr().err
    assert cli(["train-check", "--ids", str(tmp_path / "ids.npy"), "--out",
                str(tmp_path / "tc")]) == 2
    assert "give --model (an HF model folder) or --arch/--pattern" in capsys.readouterr().err
