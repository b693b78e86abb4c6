"""`mambaweb generate-bin --family mamba3 --mimo-rank R`: a MIMO Mamba-3 in mamba_ssm's layout
(config.json is_mimo / mimo_rank / chunk 64/R, the mimo_x / mimo_z / mimo_o tensors at
mamba_ssm's initialisation), and the option refused in one sentence where it does not apply."""
import json
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from tests.conftest import REPO


def mambaweb(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_generate_bin_writes_a_mimo_mamba3(tmp_path):
    out = tmp_path / "m"
    r = mambaweb("generate-bin", "--family", "mamba3", "--size", "tiny", "--d-model", 32,
                 "--n-layers", 2, "--mimo-rank", 4, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "MIMO rank 4" in r.stdout
    ssm = json.loads((out / "config.json").read_text())["ssm_cfg"]
    assert (ssm["layer"], ssm["is_mimo"], ssm["mimo_rank"], ssm["chunk_size"]) == ("Mamba3", True, 4, 16)
    W = load_file(str(out / "model.safetensors"))
    H, P, N = 64 // ssm["headdim"], ssm["headdim"], ssm["d_state"]
    m = "backbone.layers.1.mixer."
    for name, value in (("mimo_x", 0.25), ("mimo_z", 1.0), ("mimo_o", 0.25)):
        assert W[m + name].shape == (H, 4, P)
        assert np.all(W[m + name] == np.float32(value)), name      # mamba_ssm: ones / R, ones, ones / R
    assert W[m + "B_bias"].shape == (H, 4, N)
    assert W[m + "in_proj.weight"].shape[0] == 2 * 64 + 2 * 4 * N + 3 * H + N // 4


def test_mimo_rank_refused_where_it_does_not_apply(tmp_path):
    r = mambaweb("generate-bin", "--family", "mamba2", "--mimo-rank", 2, "--out", tmp_path / "a")
    assert r.returncode == 2 and "Mamba-3 option" in r.stderr and r.stderr.count("\n") == 1
    r = mambaweb("generate-bin", "--family", "mamba3", "--mimo-rank", 9, "--out", tmp_path / "b")
    assert r.returncode == 2 and "mimo_rank 9 is outside 1..8" in r.stderr
