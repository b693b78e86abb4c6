"""tools/ab_decode.py's settings: NAME:ATTR=VALUE[,ATTR=VALUE] into device attributes, numbers
as numbers, and a malformed one refused by name."""
import pytest

from tools.ab_decode import parse_setting


def test_a_setting_names_device_attributes_with_typed_values():
    assert parse_setting("w:matvec_stage=0,scan_step_sg=1") == \
        ("w", {"matvec_stage": 0, "scan_step_sg": 1})
    assert parse_setting("e:eps=1e-5,mode=rows") == ("e", {"eps": 1e-5, "mode": "rows"})


@pytest.mark.parametrize("text", ["nocolon", ":a=1", "n:", "n:a", "n:=1", "n:a=1,b"])
def test_a_malformed_setting_is_refused_by_name(text):
    with pytest.raises(ValueError, match="--setting"):
        parse_setting(text)
