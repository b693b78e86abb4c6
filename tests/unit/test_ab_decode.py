"""tools/ab_decode.py's settings: NAME:ATTR=VALUE[,ATTR=VALUE] into device attributes and
environment variables, numbers as numbers, a malformed or unread one refused by name; and on a
tiny model natively, each setting in force for its own runs only, what was set before restored."""
import argparse

import pytest

from tests.native_support import engine, native  # noqa: F401
from tools.ab_decode import main, parse_setting, unknown_names


def test_a_setting_names_device_attributes_with_typed_values():
    assert parse_setting("w:matvec_stage=0,scan_step_sg=1") == \
        ("w", {"matvec_stage": 0, "scan_step_sg": 1})
    assert parse_setting("e: eps=1e-5 , mode=rows") == ("e", {"eps": 1e-5, "mode": "rows"})
    # an environment variable keeps its text (1e5 is not 100000.0, 010 not 10)
    assert parse_setting("v:MAMBAWEB_A=1e5,MAMBAWEB_B=010") == \
        ("v", {"MAMBAWEB_A": "1e5", "MAMBAWEB_B": "010"})
    # a value may hold '=' and ':' (a plan entry)
    assert parse_setting("p:MAMBAWEB_MATVEC_PLAN=f16:4096x2048=2/16/-") == \
        ("p", {"MAMBAWEB_MATVEC_PLAN": "f16:4096x2048=2/16/-"})


@pytest.mark.parametrize("text", ["nocolon", ":a=1", " :a=1", "n:", "n: ", "n:a", "n:=1",
                                  "n: =1", "n:a=", "n:a= ", "n:a=1,b", "n:a=1,a=2", "n:a-b=1"])
def test_a_malformed_setting_is_refused_by_name(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--setting"):
        parse_setting(text)


def test_names_no_engine_source_reads_are_refused(capsys):
    settings = [parse_setting("a:matvec_stage=1,MAMBAWEB_MATVEC_PLAN=x"),
                parse_setting("b:matvec_warm=0,MAMBAWEB_NO_SUCH=1")]
    assert unknown_names(settings) == ["MAMBAWEB_NO_SUCH", "matvec_warm"]
    with pytest.raises(SystemExit):
        main(["--setting", "b:matvec_warm=0"])
    assert "matvec_warm" in capsys.readouterr().err
    with pytest.raises(SystemExit):    # two settings of one name would merge their runs
        main(["--setting", "a:matvec_stage=1", "--setting", "a:matvec_stage=0"])
    assert "must differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rounds", "0", "--setting", "a:matvec_stage=1"])
    assert "at least 1" in capsys.readouterr().err


PROBE = ("\nresult['after'] = [getattr(device, 'matvec_stage', None), "
         "__import__('os').environ.get('MAMBAWEB_MATVEC_RPT')]")
PRESET = ("import os\nos.environ['MAMBAWEB_MATVEC_RPT'] = '2'\ndevice.matvec_stage = 1\n")
CLEAR = ("import os\nos.environ.pop('MAMBAWEB_MATVEC_RPT', None)\n"
         "if hasattr(device, 'matvec_stage'): del device.matvec_stage\n"
         "result = [getattr(device, 'matvec_stage', None), os.environ.get('MAMBAWEB_MATVEC_RPT')]")


@native
def test_settings_run_side_by_side_and_are_undone(engine, tmp_path):
    """Every setting's rounds reported; an attribute and an environment variable in force for
    their setting only: unset ones unset again, values set before the runs put back, and a
    setting the engine refuses (MAMBAWEB_CONV4=2: the conv step's choice, read on every adapter,
    where the mat-vec's own are read only where it has subgroups) fails -- so it was applied --
    and is undone too."""
    from tools.ab_decode import SNIPPET
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    _write_random_model(tmp_path / "m", MODEL_CONFIGS["d256x4"])
    kw = dict(folder=str(tmp_path / "m"), fmt="f16", tokens=4, rounds=2)
    try:
        r = engine.run(SNIPPET + PROBE, **kw,
                       settings=[parse_setting("a:matvec_stage=1"),
                                 parse_setting("b:matvec_stage=0,MAMBAWEB_MATVEC_RPT=2")])
        assert r["after"] == [None, None]
        for name in ("a", "b"):
            runs = r[name]["runs"]
            assert len(runs) == 2 and all(x["gpu_ms_per_token"] > 0 for x in runs)
            assert r[name]["gpu_ms_per_token_best"] == min(x["gpu_ms_per_token"] for x in runs)
        r = engine.run(PRESET + SNIPPET + PROBE, **kw,
                       settings=[parse_setting("a:matvec_stage=0,MAMBAWEB_MATVEC_RPT=4")])
        assert r["after"] == [1, "2"]
        with pytest.raises(ValueError, match="MAMBAWEB_CONV4 must be"):
            engine.run(PRESET + SNIPPET, **kw, settings=[parse_setting("c:MAMBAWEB_CONV4=2")])
        assert engine.run("result = [getattr(device, 'matvec_stage', None), "
                          "__import__('os').environ.get('MAMBAWEB_MATVEC_RPT')]") == [1, "2"]
    finally:
        assert engine.run(CLEAR) == [None, None]
