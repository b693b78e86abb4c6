"""tools/ab_decode.py's settings: NAME:ATTR=VALUE[,ATTR=VALUE] into device attributes, numbers
as numbers, and a malformed one refused by name."""
import pytest

from tests.native_support import engine, native  # noqa: F401
from tools.ab_decode import parse_setting


def test_a_setting_names_device_attributes_with_typed_values():
    assert parse_setting("w:matvec_stage=0,scan_step_sg=1") == \
        ("w", {"matvec_stage": 0, "scan_step_sg": 1})
    assert parse_setting("e:eps=1e-5,mode=rows") == ("e", {"eps": 1e-5, "mode": "rows"})


@pytest.mark.parametrize("text", ["nocolon", ":a=1", "n:", "n:a", "n:=1", "n:a=1,b"])
def test_a_malformed_setting_is_refused_by_name(text):
    with pytest.raises(ValueError, match="--setting"):
        parse_setting(text)


@native
def test_settings_run_side_by_side_and_are_undone(engine, tmp_path):
    """The snippet on a tiny model (native backend): every setting's rounds reported, an
    attribute and an environment variable both in force for their setting only."""
    from tools.ab_decode import SNIPPET
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    _write_random_model(tmp_path / "m", MODEL_CONFIGS["d256x4"])
    probe = ("\nresult['after'] = [getattr(device, 'matvec_stage', None), "
             "__import__('os').environ.get('MAMBAWEB_MATVEC_RPT')]")
    r = engine.run(SNIPPET + probe, folder=str(tmp_path / "m"), fmt="f16", tokens=4, rounds=2,
                   settings=[parse_setting("a:matvec_stage=1"),
                             parse_setting("b:matvec_stage=0,MAMBAWEB_MATVEC_RPT=2")])
    assert r["after"] == [None, None]
    for name in ("a", "b"):
        runs = r[name]["runs"]
        assert len(runs) == 2 and all(x["gpu_ms_per_token"] > 0 for x in runs)
        assert r[name]["gpu_ms_per_token_best"] == min(x["gpu_ms_per_token"] for x in runs)
