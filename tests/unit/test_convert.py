"""Conversion vs transformers 5.23: names/shapes, round trips, dtype bits, shards, refusals."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402

from py_engine.io import hf_names, mbjs  # noqa: E402
from py_engine.io.safetensors_format import read_header  # noqa: E402
from py_engine.models.config import MambaConfig  # noqa: E402
from tools import convert_host  # noqa: E402
from tools.cli import main as cli  # noqa: E402

SMALL = dict(vocab_size=56, hidden_size=24, num_hidden_layers=2, state_size=4, conv_kernel=4)
IDS = torch.tensor([[1, 5, 9, 3, 0, 55, 7, 2, 11]])
quiet = dict(log=lambda *_: None)


def _hf_model(tmp_path, cls="MambaForCausalLM", seed=0, name="src", **kw):
    torch.manual_seed(seed)
    conf_cls = (transformers.FalconMambaConfig if "Falcon" in cls else transformers.MambaConfig)
    model = getattr(transformers, cls)(conf_cls(**{**SMALL, **kw})).eval()
    with torch.no_grad():        # make every tensor (biases too) distinctive
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / name)
    return model, tmp_path / name


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _load(path, dtype=torch.float32):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.mark.parametrize("cls, kw", [
    ("MambaForCausalLM", {}),
    ("FalconMambaForCausalLM", {}),
    ("MambaForCausalLM", dict(tie_word_embeddings=False, use_bias=True, use_conv_bias=False)),
])
def test_expected_tensors_match_transformers(cls, kw):
    conf_cls = (transformers.FalconMambaConfig if "Falcon" in cls else transformers.MambaConfig)
    hf_cfg = conf_cls(**{**SMALL, **kw})
    model = getattr(transformers, cls)(hf_cfg)
    sd = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    cfg = MambaConfig.from_hf_dict(hf_cfg.to_dict())
    want = hf_names.expected_tensors(cfg)
    if cfg.tie_word_embeddings:      # state_dict lists the tied head; checkpoints omit it
        assert sd.pop("lm_head.weight") == want[hf_names.EMBED]
    assert list(want.items()) == list(sd.items())


def test_tied_checkpoint_omits_lm_head(tmp_path):
    _, path = _hf_model(tmp_path)
    names = {t.name for t in read_header(path / "model.safetensors").tensors}
    assert "lm_head.weight" not in names     # transformers 5.23 does not save a tied head
    _, path = _hf_model(tmp_path, name="untied", tie_word_embeddings=False)
    assert "lm_head.weight" in {t.name for t in read_header(path / "model.safetensors").tensors}


def test_check_tensors_messages():
    cfg = MambaConfig(**SMALL)
    good = hf_names.expected_tensors(cfg)
    bad = dict(good)
    del bad["backbone.layers.1.mixer.D"]
    bad["backbone.layers.0.mixer.A_log"] = (48, 5)
    bad["backbone.layers.0.mixer.in_proj.bias"] = (96,)
    bad["backbone.layers.7.norm.weight"] = (24,)
    with pytest.raises(ValueError) as e:
        hf_names.check_tensors(cfg, bad, "dir/model.safetensors")
    msg = str(e.value)
    assert msg.startswith("dir/model.safetensors: tensors do not match config")
    assert "missing tensor backbone.layers.1.mixer.D (expected shape [48])" in msg
    assert ("tensor backbone.layers.0.mixer.A_log: expected shape [48, 4], found [48, 5]"
            in msg)
    assert ("unexpected tensor backbone.layers.0.mixer.in_proj.bias [96] "
            "(config has use_bias=false)") in msg
    assert "(config has num_hidden_layers=2)" in msg
    ok = dict(good, **{"lm_head.weight": (56, 24)})       # a redundant tied head is fine
    hf_names.check_tensors(cfg, ok, "x")


def test_hf_mbjs_hf_round_trip_is_exact(tmp_path):
    model, src = _hf_model(tmp_path)
    convert_host.convert(src, tmp_path / "m.bin", **quiet)
    convert_host.convert(tmp_path / "m.bin", tmp_path / "back", **quiet)
    a = load_file(src / "model.safetensors")
    b = load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    # and the MBJS conv really is PyTorch's reversed
    layout = mbjs.read_layout(tmp_path / "m.bin")
    idx = [p[0] for p in hf_names.mbjs_plan(MambaConfig(**SMALL))].index("layer0.wConv")
    conv = np.frombuffer((tmp_path / "m.bin").read_bytes(), "<f4", 48 * 4,
                         layout.offsets[idx]).reshape(48, 4)
    assert np.array_equal(conv, a["backbone.layers.0.mixer.conv1d.weight"][:, 0, ::-1])
    assert torch.equal(_logits(_load(tmp_path / "back")), _logits(model))


def test_generated_checkpoint_loads_with_identical_logits(tmp_path):
    # a checkpoint we write from scratch: transformers loads it and computes what our tensors say
    cfg = MambaConfig(**SMALL)
    from tools.init_weights import init_weights
    w = init_weights(cfg, seed=3)
    convert_host.write_hf(tmp_path / "gen", cfg, w)
    model = _load(tmp_path / "gen")
    for name, p in model.state_dict().items():
        ref = w[hf_names.EMBED] if name == "lm_head.weight" else w[name]
        assert np.array_equal(p.numpy(), ref), name
    ref = transformers.MambaForCausalLM(transformers.MambaConfig(**SMALL)).eval()
    ref.load_state_dict({n: torch.from_numpy(v) for n, v in w.items()}, strict=False)
    assert torch.equal(_logits(model), _logits(ref))


@pytest.mark.parametrize("dtype, tdtype", [("bf16", torch.bfloat16), ("f16", torch.float16)])
def test_dtype_conversion_bit_identical_to_torch(tmp_path, dtype, tdtype):
    model, src = _hf_model(tmp_path)
    convert_host.convert(src, tmp_path / dtype, dtype=dtype, **quiet)
    conf = json.loads((tmp_path / dtype / "config.json").read_text())
    assert conf["dtype"] == {"bf16": "bfloat16", "f16": "float16"}[dtype]
    got = _load(tmp_path / dtype, tdtype)
    ref = model.to(tdtype)
    for name, p in ref.state_dict().items():
        q = got.state_dict()[name]
        assert q.dtype == tdtype
        assert torch.equal(p.view(torch.int16), q.view(torch.int16)), name
    assert torch.equal(_logits(got), _logits(ref))


def test_rounding_edge_values_match_torch():
    f32 = np.float32
    special = np.array([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan, -np.nan,
                        3.4028235e38, -3.4028235e38, 65504.0, 65520.0, 65519.99, 1e-8,
                        5.96e-8, 2.98e-8, 6.1e-5, 1.1754944e-38, 1e-45], dtype=f32)
    ties = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF, 0x7F7FFFFF,
                     0x7FC00001, 0xFF800001, 0x00008000, 0x00018000], np.uint32).view(f32)
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32).view(f32)
    x = np.concatenate([special, ties, rand, rng.standard_normal(10_000).astype(f32) * 1e-6])
    t = torch.from_numpy(x.copy())
    bf = convert_host.f32_to_bf16_bits(x)
    assert np.array_equal(bf, t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    h = np.frombuffer(convert_host.from_f32(x, "F16"), "<u2")
    assert np.array_equal(h, t.to(torch.float16).view(torch.int16).numpy().view(np.uint16))
    back = convert_host.bf16_bits_to_f32(bf)
    assert np.array_equal(back, t.to(torch.bfloat16).float().numpy(), equal_nan=True)


def test_sharded_round_trip(tmp_path):
    model, src = _hf_model(tmp_path)
    convert_host.convert(src, tmp_path / "sh", shards=3, **quiet)
    files = sorted(p.name for p in (tmp_path / "sh").glob("*.safetensors"))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "sh" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert torch.equal(_logits(_load(tmp_path / "sh")), _logits(model))
    convert_host.convert(tmp_path / "sh", tmp_path / "one", **quiet)
    # merged back: byte-identical to the file transformers itself wrote
    assert ((tmp_path / "one" / "model.safetensors").read_bytes()
            == (src / "model.safetensors").read_bytes())
    convert_host.convert(src, tmp_path / "cap", max_shard_bytes=4000, **quiet)
    assert len(list((tmp_path / "cap").glob("model-*.safetensors"))) > 3
    assert torch.equal(_logits(_load(tmp_path / "cap")), _logits(model))


def test_untied_head_refused_unless_dropped(tmp_path, capsys):
    _, src = _hf_model(tmp_path, tie_word_embeddings=False)
    rc = cli(["convert", str(src), str(tmp_path / "u.bin")])
    err = capsys.readouterr().err
    assert rc == 2 and "has an untied LM head" in err and "--drop-untied-head" in err
    rc = cli(["convert", str(src), str(tmp_path / "u.bin"), "--drop-untied-head"])
    out = capsys.readouterr().out
    assert rc == 0 and "dropped the untied lm_head.weight" in out
    assert mbjs.read_layout(tmp_path / "u.bin").has_trailer


def test_falcon_refused(tmp_path):
    _, src = _hf_model(tmp_path, cls="FalconMambaForCausalLM")
    with pytest.raises(ValueError, match="is Falcon-Mamba: it applies a weightless RMSNorm"):
        convert_host.convert(src, tmp_path / "f.bin", **quiet)
    # HF -> HF keeps it, mixer_rms_eps included
    convert_host.convert(src, tmp_path / "f16", dtype="f16", **quiet)
    assert json.loads((tmp_path / "f16" / "config.json").read_text())["mixer_rms_eps"] == 1e-6


def test_biases_survive_mbjs(tmp_path):
    model, src = _hf_model(tmp_path, use_bias=True)
    convert_host.convert(src, tmp_path / "b.bin", **quiet)
    cfg = convert_host.convert(tmp_path / "b.bin", tmp_path / "back", **quiet)
    assert cfg.use_bias
    assert torch.equal(_logits(_load(tmp_path / "back")), _logits(model))


def test_nonzero_x_proj_bias_refused(tmp_path):
    cfg = MambaConfig(**SMALL)
    from tools.init_weights import init_weights
    w = init_weights(cfg)
    path = tmp_path / "x.bin"
    convert_host.write_mbjs(path, cfg, w.__getitem__)
    layout = mbjs.read_layout(path)
    plan = hf_names.mbjs_plan(cfg)
    idx = [p[0] for p in plan].index("layer1.bXProj")
    blob = bytearray(path.read_bytes()[:-8])
    blob[layout.offsets[idx]:layout.offsets[idx] + 4] = np.float32(0.5).tobytes()
    path.write_bytes(bytes(blob))      # no trailer: legacy-style file
    with pytest.raises(ValueError, match="backbone.layers.1.mixer.x_proj.bias is nonzero "
                                         r"\(max \|b\| 0.5\); HF Mamba's x_proj has no bias"):
        convert_host.convert(path, tmp_path / "out", **quiet)


def test_cli_prints_what_it_did(tmp_path, capsys):
    _, src = _hf_model(tmp_path)
    assert cli(["convert", str(src), str(tmp_path / "h.bin"), "--dtype", "f16"]) == 0
    out = capsys.readouterr().out
    assert "-> MBJS v3 f16" in out and "reversed conv1d taps" in out
    assert cli(["convert", str(tmp_path / "h.bin"), str(tmp_path / "h"),
                "--layer-norm-epsilon", "1e-6"]) == 0
    conf = json.loads((tmp_path / "h" / "config.json").read_text())
    assert conf["layer_norm_epsilon"] == 1e-6 and conf["dtype"] == "float16"
    assert cli(["convert", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "neither an HF model folder nor an MBJS file" in capsys.readouterr().err


def test_mamba_ssm_checkpoints_convert_to_the_transformers_folder(tmp_path):
    """mamba_ssm's layout (safetensors, and pytorch_model.bin read without torch) becomes the
    HF folder transformers wrote, byte for byte; transformers reproduces the fixture logits."""
    import json as _json

    import numpy as np
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tools import convert_host
    from pathlib import Path
    fix = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    outs = {}
    for name in ("mamba2-g1-tied", "mamba2-g1-tied-ssm", "mamba2-g1-tied-ssm-bin"):
        convert_host.convert(fix / name, tmp_path / name, log=lambda *a: None)
        outs[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert len(set(outs.values())) == 1
    conf = _json.loads((tmp_path / "mamba2-g1-tied-ssm-bin" / "config.json").read_text())
    assert conf["model_type"] == "mamba2" and conf["architectures"] == ["Mamba2ForCausalLM"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "mamba2-g1-tied-ssm-bin")
    exp = np.load(fix / "mamba2-g1-tied" / "expected.npz")
    with torch.no_grad():
        logits = model(torch.tensor(exp["prompt_ids"][None].astype(np.int64))).logits[0].numpy()
    assert np.abs(logits - exp["logits"].reshape(logits.shape)).max() <= 1e-4
    # and to bf16 / back: bit-identical to torch's rounding, like Mamba-1
    convert_host.convert(fix / "mamba2-g2-untied", tmp_path / "bf", dtype="bf16",
                         log=lambda *a: None)
    from safetensors.torch import load_file
    a = load_file(fix / "mamba2-g2-untied" / "model.safetensors")
    b = load_file(tmp_path / "bf" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k].to(torch.bfloat16), b[k]) for k in a)


def test_mamba3_converts_in_mamba_ssm_layout(tmp_path):
    """Mamba-3 has no transformers class: converting keeps mamba_ssm's names and config."""
    from pathlib import Path

    from safetensors.numpy import load_file as load_np
    fix = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "mamba3-g2-r10-untied-onorm"
    convert_host.convert(fix, tmp_path / "m3", log=lambda *a: None)
    a, b = load_np(fix / "model.safetensors"), load_np(tmp_path / "m3" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    conf = json.loads((tmp_path / "m3" / "config.json").read_text())
    assert conf["ssm_cfg"]["layer"] == "Mamba3" and conf["ssm_cfg"]["is_outproj_norm"] is True
    assert MambaConfig.from_hf_dict(conf).layers == ["mamba3", "mamba3"]
