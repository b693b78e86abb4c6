"""`mambaweb bench --native --variant NAME:VAR=VALUE,...`: the variant spec parses or is refused
by name, and the environment it sets holds for the block and is restored after (tools/cmd_bench.py)."""
import os

import pytest

from tools import cmd_bench


def test_parse():
    assert cmd_bench._parse_variant("s0:MAMBAWEB_MATVEC_STAGE=0") == \
        ("s0", {"MAMBAWEB_MATVEC_STAGE": "0"})
    assert cmd_bench._parse_variant("rows:A=1,B=x=y") == ("rows", {"A": "1", "B": "x=y"})


@pytest.mark.parametrize("bad", ["MAMBAWEB_MATVEC_STAGE=0", "s0:", ":A=1", "s0:A", "s0:=1"])
def test_refused(bad):
    with pytest.raises(ValueError, match="NAME:VAR=VALUE"):
        cmd_bench._parse_variant(bad)


def test_environ_restored(monkeypatch):
    monkeypatch.setenv("MW_T_KEEP", "old")
    monkeypatch.delenv("MW_T_NEW", raising=False)
    with cmd_bench._environ({"MW_T_KEEP": "new", "MW_T_NEW": "1"}):
        assert os.environ["MW_T_KEEP"] == "new" and os.environ["MW_T_NEW"] == "1"
    assert os.environ["MW_T_KEEP"] == "old" and "MW_T_NEW" not in os.environ


def test_variant_needs_native():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--variant", "a:B=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--variant needs --native" in r.stderr
