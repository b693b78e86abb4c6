"""Virtual-layer schedules and bidirectional options on the host: burn-mamba's schedules,
config.json round trips under our keys, refusals by name (bad schedules, MBJS, transformers
export of bidirectional models), the unrolled form's tensor map, and the masked-token objective."""
import pytest

from py_engine.io import hf_names
from py_engine.io.unroll import unrolled
from py_engine.models.config import MambaConfig
from py_engine.models.schedule import resolve
from py_engine.train.init import preset_config
from py_engine.train.masked import IGNORE, MaskedTokens


def test_schedules_are_burn_mambas():
    # burn-mamba src/schedule.rs test vectors (8 virtual over 3 real)
    assert resolve("8", 3) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert resolve("8:cyclic", 3) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert resolve("8:stretched", 3) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert resolve("0,1,2,2,1,0,0,0", 3) == [0, 1, 2, 2, 1, 0, 0, 0]


@pytest.mark.parametrize("spec,words", [("2", "at least 3"), ("8:spiral", "'spiral'"),
                                        ("x", "expected L"), ("0,a", "comma")])
def test_bad_schedule_specs_are_named(spec, words):
    with pytest.raises(ValueError, match=words):
        resolve(spec, 3)


def _d(**kw):
    return dict(dict(model_type="mamba2", hidden_size=64, num_hidden_layers=2, vocab_size=256,
                     num_heads=4, head_dim=32, state_size=16, n_groups=1), **kw)


def test_config_round_trip_keeps_our_keys():
    cfg = MambaConfig.from_hf_dict(_d(mambaweb_virtual_layers=[0, 1, 1, 0]))
    assert cfg.virtual_layers == [0, 1, 1, 0] and "mambaweb_virtual_layers" not in cfg.extra
    d = cfg.to_hf_dict()
    assert d["mambaweb_virtual_layers"] == [0, 1, 1, 0] and d["num_hidden_layers"] == 2
    assert MambaConfig.from_hf_dict(d).virtual_layers == [0, 1, 1, 0]
    b = preset_config("tiny", family="mamba2", bidi="concat", vocab_size=256)
    d = b.to_hf_dict()
    assert d["layers"] == ["bidi_mamba2"] * 2
    assert d["mambaweb_bidirectional"] == {"merge": "concat", "mask_token_id": 256}
    again = MambaConfig.from_hf_dict(d)
    assert again.bidirectional == b.bidirectional and again.layers == b.layers
    assert "backbone.layers.0.mixer.merge.weight" in hf_names.expected_tensors(again)
    # a plain model writes neither key
    assert not set(MambaConfig.from_hf_dict(_d()).to_hf_dict()) & {
        "mambaweb_virtual_layers", "mambaweb_bidirectional"}


@pytest.mark.parametrize("options", [dict(bidi="mean"), dict(bidi="concat", mimo_rank=2),
                                     dict(bidi="mean", virtual="3:stretched")])
def test_bidirectional_mamba3_round_trips_through_mamba_ssms_config(options):
    """mamba_ssm's config.json has no per-layer kinds: our bidirectional key alone brings the
    bidi_mamba3 layers back (it once loaded as plain Mamba-3 and was refused)."""
    b = preset_config("tiny", family="mamba3", num_hidden_layers=2, vocab_size=256, **options)
    d = b.to_hf_dict()
    assert d["ssm_cfg"]["layer"] == "Mamba3" and "layers" not in d
    again = MambaConfig.from_hf_dict(d, "config.json")
    assert again.layers == ["bidi_mamba3"] * 2 and again.bidirectional == b.bidirectional
    assert again.virtual_layers == b.virtual_layers and again.is_mimo == b.is_mimo
    assert again.to_hf_dict() == d
    # a mamba_ssm hybrid with the key is still refused: its attention layers are not bidi
    hybrid = dict(d, attn_layer_idx=[1], attn_cfg={"num_heads": 2, "causal": True})
    with pytest.raises(ValueError, match="no layer is bidirectional"):
        MambaConfig.from_hf_dict(hybrid, "config.json")


@pytest.mark.parametrize("extra,words", [
    (dict(mambaweb_virtual_layers=[0, 0]), "never uses physical layer"),
    (dict(mambaweb_virtual_layers=[0, 1, 2]), r"mambaweb_virtual_layers\[2\] is 2"),
    (dict(mambaweb_virtual_layers="0,1"), "must be a list"),
    (dict(mambaweb_bidirectional={"merge": "mean"}), "no layer is bidirectional"),
    (dict(layers=["bidi_mamba2"] * 2, mambaweb_bidirectional={"merge": "max"}), "'max'"),
    (dict(layers=["bidi_mamba2"] * 2,
          mambaweb_bidirectional={"merge": "mean", "mask_token_id": 999}), "mask_token_id"),
])
def test_bad_configs_are_refused_by_name(extra, words):
    with pytest.raises(ValueError, match=words):
        MambaConfig.from_hf_dict(_d(**extra), "config.json")


def test_mbjs_refuses_virtual_models_by_name():
    cfg = preset_config("tiny", family="mamba1", virtual="4", vocab_size=256)
    with pytest.raises(ValueError, match="virtual layers .*MBJS"):
        hf_names.mbjs_plan(cfg)


def test_unroll_maps_each_use_to_its_physical_layer_and_refuses_bidi():
    cfg = preset_config("tiny", family="mamba2", virtual="0,1,1,0,1", vocab_size=256)
    cfg2, names = unrolled(cfg)
    assert cfg2.num_hidden_layers == 5 and cfg2.virtual_layers == []
    assert set(names) == set(hf_names.expected_tensors(cfg2))
    assert names["backbone.layers.3.mixer.in_proj.weight"] == "backbone.layers.0.mixer.in_proj.weight"
    assert names["backbone.layers.4.norm.weight"] == "backbone.layers.1.norm.weight"
    assert "mambaweb_virtual_layers" not in cfg2.to_hf_dict()
    bidi = preset_config("tiny", family="mamba2", virtual="4", bidi="mean", vocab_size=256)
    with pytest.raises(ValueError, match="bidirectional layers have no transformers class"):
        unrolled(bidi)


def test_masked_tokens_are_deterministic_and_cover_every_sequence():
    m = MaskedTokens(256)
    ids = list(range(40)) * 2
    a = m.apply(ids, 2, 40, step=7)
    assert a == m.apply(ids, 2, 40, step=7)            # resume masks as the first run did
    assert a != m.apply(ids, 2, 40, step=8)
    inputs, targets = a
    for b in range(2):
        masked = [t for t in range(40) if targets[b * 40 + t] != IGNORE]
        assert masked and all(inputs[b * 40 + t] == 256 for t in masked)
        assert all(inputs[b * 40 + t] == ids[b * 40 + t] for t in range(40) if t not in masked)
    assert MaskedTokens.of(preset_config("tiny", family="mamba2", vocab_size=256)) is None
