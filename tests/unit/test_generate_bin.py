"""generate-bin: mamba_ssm's initialisation, presets, formats, and the embedded default model."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from py_engine.io import mbjs
from tools.cli import main as cli
from tools.init_weights import PRESETS, init_weights, make_config, param_count

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CMD = ["generate-bin", "--vocab-size", "256", "--d-model", "64", "--n-layers", "2",
               "--seed", "0", "--format", "hf"]


def test_presets_have_the_advertised_sizes():
    sizes = {name: param_count(make_config(name)) for name in PRESETS}
    assert 0.9e6 < sizes["nano"] < 1.1e6
    assert 4.5e6 < sizes["micro"] < 5.5e6
    assert 18e6 < sizes["small"] < 22e6
    assert 125e6 < sizes["base"] < 135e6
    base = make_config("base")        # mamba-130m's shape
    assert (base.hidden_size, base.num_hidden_layers, base.vocab_size) == (768, 24, 50280)
    assert make_config("nano", vocab_size=250).vocab_size == 256   # padded to a multiple of 8


def test_initialisation_follows_mamba_ssm():
    cfg = make_config("nano", hidden_size=64, num_hidden_layers=4, vocab_size=512)
    w = init_weights(cfg, seed=5)
    I, N, K, R, D = 128, 16, 4, 4, 64
    m = "backbone.layers.2.mixer."
    assert np.allclose(w[m + "A_log"], np.log(np.tile(np.arange(1, N + 1), (I, 1))),
                       rtol=0, atol=1e-6)
    assert np.all(w[m + "D"] == 1) and np.all(w["backbone.layers.2.norm.weight"] == 1)
    assert np.all(w["backbone.norm_f.weight"] == 1)
    dt = np.log1p(np.exp(w[m + "dt_proj.bias"].astype(np.float64)))   # softplus
    assert np.all(dt >= 0.001 * 0.9999) and np.all(dt <= 0.1 * 1.0001)
    assert np.std(np.log(dt)) > 0.8                                     # log-uniform spread
    s = R ** -0.5
    dtw = np.abs(w[m + "dt_proj.weight"]).max()
    assert 0.9 * s < dtw <= s
    for name, fan_in, scale in (("in_proj.weight", D, 1), ("x_proj.weight", I, 1),
                                ("conv1d.weight", K, 1), ("out_proj.weight", I, 2)):
        bound = 1 / math.sqrt(fan_in) / scale     # out_proj: / sqrt(n_layer = 4)
        a = np.abs(w[m + name])
        assert a.max() <= bound and a.max() > 0.95 * bound, name
    assert abs(np.std(w["backbone.embeddings.weight"]) - 0.02) < 0.001
    assert w[m + "in_proj.weight"].shape == (2 * I, D)
    assert set(v.dtype for v in w.values()) == {np.dtype(np.float32)}
    again = init_weights(cfg, seed=5)
    assert all(np.array_equal(w[k], again[k]) for k in w)


def test_hf_and_mbjs_outputs_agree(tmp_path, capsys):
    args = ["generate-bin", "--size", "nano", "--d-model", "32", "--n-layers", "2",
            "--vocab-size", "64", "--seed", "9"]
    assert cli(args + ["--out", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "d_model 32" in out
    assert cli(args + ["--out", str(tmp_path / "m.bin")]) == 0
    assert mbjs.read_layout(tmp_path / "m.bin").has_trailer
    assert cli(["convert", str(tmp_path / "m.bin"), str(tmp_path / "back")]) == 0
    a = load_file(tmp_path / "hf" / "model.safetensors")
    b = load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert cli(args + ["--format", "mbjs", "--untied", "--out", str(tmp_path / "u.bin")]) == 2
    assert "MBJS always ties" in capsys.readouterr().err


def test_generated_model_runs_in_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    assert cli(["generate-bin", "--d-model", "32", "--n-layers", "2", "--vocab-size", "64",
                "--dtype", "bf16", "--out", str(tmp_path / "g")]) == 0
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "g", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 63]])).logits
    assert logits.shape == (1, 4, 64) and torch.isfinite(logits).all()
    # transformers holds exactly the written weights (it re-scales out_proj on load when a
    # config says rescale_prenorm_residual; ours is already scaled and says false)
    from tests.reference.mamba1_model_numpy import load_safetensors
    written = load_safetensors(tmp_path / "g" / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in written:
            assert torch.equal(p.float(), torch.from_numpy(written[name]).float()), name


def test_default_model_is_the_documented_trained_model(tmp_path):
    """models/default is what its README says: the Mamba-2 shape it states, a BPE tokenizer the
    `tokenizers` library loads and our tokenizer matches id for id, weights transformers loads,
    under the repository's 25 MB, and trained: Python text costs far less than ln(4096) = 8.3
    nats/token, the loss of an untrained model."""
    folder = REPO / "models" / "default"
    conf = json.loads((folder / "config.json").read_text())
    assert conf["model_type"] == "mamba2" and conf["vocab_size"] == 4096
    assert (conf["hidden_size"], conf["num_hidden_layers"]) == (256, 8)
    assert (folder / "model.safetensors").stat().st_size < 25_000_000
    readme = (folder / "README.md").read_text()
    assert "4,772,288 parameters" in readme and "python -m tools.make_default_model corpus" in readme
    assert "1.4499" in readme and "1.9677" in readme       # held-out bits/byte: new, previous
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    from py_engine.tokenizer import Tokenizer
    ours = Tokenizer.from_file(folder / "tokenizer.json")
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    ids = tok.encode(text).ids
    assert ours.encode(text) == ids
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    t = torch.tensor([ids])
    with torch.no_grad():
        loss = model(t, labels=t).loss.item()
    assert loss < 4.5


def test_generate_bin_is_deterministic(tmp_path):
    for d in ("a", "b"):
        assert cli(DEFAULT_CMD + ["--out", str(tmp_path / d)]) == 0
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize("family", ["mamba1", "mamba2"])
def test_host_initialiser_is_the_engine_initialiser(family):
    """One initialiser: numpy (generate-bin) and init.draw (pure Python, same numbers as the
    GPU kernels, tests/browser/test_pretrain.py) give the same weights for the same seed."""
    from py_engine.train import init as pinit
    cfg = make_config("tiny", family=family, hidden_size=32, num_hidden_layers=2,
                      vocab_size=40)
    w = init_weights(cfg, seed=11)
    for name, shape, kind, a, period in pinit.plan(cfg):
        ref = np.frombuffer(pinit.draw(cfg, name, shape, kind, a, 11, period=period).tobytes(),
                            np.float32).reshape(shape)
        if kind in ("uniform", "const"):
            assert np.array_equal(w[name], ref), name
        else:
            np.testing.assert_allclose(w[name], ref, rtol=1e-6, atol=1e-7, err_msg=name)


def test_mamba2_generate_bin_runs_in_transformers(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    assert cli(["generate-bin", "--family", "mamba2", "--size", "tiny", "--d-model", "32",
                "--n-layers", "2", "--vocab-size", "64", "--out", str(tmp_path / "g")]) == 0
    assert "mamba2" in capsys.readouterr().out
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "g", output_loading_info=True)
    assert type(model).__name__ == "Mamba2ForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    w = load_file(tmp_path / "g" / "model.safetensors")
    m = model.backbone.layers[1].mixer
    H = m.num_heads
    assert np.allclose(w["backbone.layers.1.mixer.A_log"], np.log(np.arange(1, H + 1)))
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3, 4, 5]])).logits
    assert torch.isfinite(out).all()


def test_hybrid_generate_bin_runs_in_transformers(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    assert cli(["generate-bin", "--family", "hybrid", "--pattern", "M*-M", "--size", "tiny",
                "--d-model", "32", "--vocab-size", "64", "--out", str(tmp_path / "h")]) == 0
    assert "layers M*-M" in capsys.readouterr().out
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "h", output_loading_info=True)
    assert type(model).__name__ == "NemotronHForCausalLM"
    assert model.config.layers_block_type == ["mamba", "attention", "mlp", "mamba"] or \
        model.config.layers_block_type == ["linear_attention", "full_attention", "mlp",
                                           "linear_attention"]
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3, 4]])).logits).all()
    assert cli(["generate-bin", "--family", "hybrid", "--pattern", "MxM", "--out",
                str(tmp_path / "bad")]) == 2
    assert "unknown layer letters ['x']" in capsys.readouterr().err
