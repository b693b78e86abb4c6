"""Mamba-3 in MBJS under mambaweb's own layer types (16 mambaweb-mamba3, 17 its softplus-A
variant; py_engine/io/mbjs.py, hf_names.MBJS_MAMBA3_PARAMS), through the one conversion planner
(convert_plan) that `mambaweb convert` and the convert page share:
  - HF (mamba_ssm layout) -> MBJS -> HF is bit-identical on every tensor of the Mamba-3 fixtures
    (SISO and MIMO; an untied head is dropped on purpose), MBJS -> HF -> MBJS byte-identical;
  - every size is inferred from the numels, the A activation from the type id; A_floor and
    chunk_size (not stored) come from hints and are named in the notes;
  - the engine's logits on the MBJS file equal the fixture's float64-reference logits <= 1e-4.
"""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from py_engine.io import convert_plan, hf_names, mbjs
from py_engine.models.config import MambaConfig
from tools import convert_host
from tools.cli import main as cli

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "models"
TIED = ["mamba3-g1-r05-tied", "mamba3-g2-r05-tied-softplus", "mamba3-mimo-r2-g1-r05-tied"]
UNTIED = ["mamba3-g2-r10-untied-onorm", "mamba3-mimo-r4-g2-r10-onorm-softplus"]
# what an MBJS file of ours must give back (A_floor, chunk_size: with the config.json hint)
READ_BACK = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "state_size",
             "expand", "head_dim", "num_heads", "n_groups", "rope_fraction", "is_mimo",
             "is_outproj_norm", "a_heavy_tail", "layers")
quiet = dict(log=lambda *_: None)


def _cfg(name):
    return MambaConfig.from_hf_dict(json.loads((FIX / name / "config.json").read_text()))


def _to_mbjs(tmp_path, name, *extra):
    out = tmp_path / f"{name}.bin"
    args = ["convert", str(FIX / name), str(out)] + (["--drop-untied-head"] if name in UNTIED
                                                    else []) + list(extra)
    assert cli(args) == 0
    return out


@pytest.mark.parametrize("name", TIED + UNTIED)
def test_hf_mbjs_hf_round_trip_is_bit_identical(tmp_path, name):
    want = _cfg(name)
    path = _to_mbjs(tmp_path, name)
    blob = path.read_bytes()
    tid = 16 if want.a_heavy_tail else 17
    assert struct.unpack_from("<II", blob, 4) == (2, 2) and blob[12:16] == bytes([tid, tid, 0, 0])
    layout = mbjs.read_layout(path)
    assert layout.numels == [int(np.prod(s)) for _, s, _, _, _ in hf_names.mbjs_plan(want)]
    # SISO writes the MIMO tensors with numel 0, no is_outproj_norm the output norm likewise
    m3 = layout.numels[1:14]
    assert (m3[7] > 0) == want.is_mimo and (m3[10] > 0) == want.is_outproj_norm
    got = mbjs.infer_config(layout)
    for key in READ_BACK:
        assert getattr(got, key) == getattr(want, key), key
    if want.is_mimo:
        assert got.mimo_rank == want.mimo_rank
    assert got.A_floor == 1e-4 and got.chunk_size == (64 // want.mimo_rank if want.is_mimo
                                                      else 64)
    # back to HF with the config.json as the hint source: same tensors, bit for bit
    assert cli(["convert", str(path), str(tmp_path / "hf"), "--config",
                str(FIX / name / "config.json")]) == 0
    a, b = load_file(FIX / name / "model.safetensors"), load_file(tmp_path / "hf" /
                                                                   "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        ref = a["backbone.embedding.weight"] if k == "lm_head.weight" and name in UNTIED else a[k]
        assert b[k].dtype == ref.dtype and np.array_equal(b[k].view(np.uint8),
                                                          ref.view(np.uint8)), k
    back = MambaConfig.from_hf_dict(json.loads((tmp_path / "hf" / "config.json").read_text()))
    for key in READ_BACK + ("A_floor", "chunk_size", "mimo_rank", "pad_vocab_size_multiple"):
        assert getattr(back, key) == getattr(want, key), key
    assert back.tie_word_embeddings
    # and HF -> MBJS again reproduces the file exactly
    assert cli(["convert", str(tmp_path / "hf"), str(tmp_path / "again.bin")]) == 0
    assert (tmp_path / "again.bin").read_bytes() == blob


def test_f16_v3_round_trip(tmp_path):
    name = "mamba3-mimo-r4-g2-r10-onorm-softplus"
    path = _to_mbjs(tmp_path, name, "--dtype", "f16")
    layout = mbjs.read_layout(path)
    assert layout.version == 3 and layout.layer_types == ["mambaweb-mamba3-softplus"] * 2
    convert_host.convert(path, tmp_path / "hf", **quiet)
    b, a = load_file(tmp_path / "hf" / "model.safetensors"), load_file(FIX / name /
                                                                       "model.safetensors")
    for k in a:
        if k != "lm_head.weight":
            assert np.array_equal(b[k], a[k].astype(np.float16)), k
    convert_host.convert(tmp_path / "hf", tmp_path / "again.bin", dtype="f16", **quiet)
    assert (tmp_path / "again.bin").read_bytes() == path.read_bytes()


def test_what_mbjs_does_not_store_is_named_and_hinted(tmp_path, capsys):
    name = "mamba3-g2-r05-tied-softplus"              # A_floor 0.3, chunk_size 8
    path = _to_mbjs(tmp_path, name)
    out = capsys.readouterr().out
    assert "MBJS layer type 17 (mambaweb-mamba3-softplus" in out
    assert "the npm engine cannot read it" in out and "A_floor 0.3 is not stored" in out
    # without a hint the reader says what it assumed; --a-floor gives it back
    assert cli(["convert", str(path), str(tmp_path / "plain")]) == 0
    out = capsys.readouterr().out
    assert "A activation softplus; A_floor 0.0001 and chunk_size 64 are not stored" in out
    assert cli(["convert", str(path), str(tmp_path / "hinted"), "--a-floor", "0.3"]) == 0
    conf = json.loads((tmp_path / "hinted" / "config.json").read_text())["ssm_cfg"]
    assert conf["A_floor"] == 0.3 and conf["A_activation"] == "softplus"
    # the convert page: a config.json dropped beside the file, or its A_floor option
    io = convert_host.HostIO()
    files = [io.add_file(path, "m.bin"), io.add_file(FIX / name / "config.json", "config.json")]
    src = convert_host.sync(convert_plan.inspect(files, io))
    assert (src.cfg.A_floor, src.cfg.chunk_size, src.cfg.a_heavy_tail) == (0.3, 8, False)
    res = convert_host.sync(convert_plan.handle(
        {"action": "plan", "files": files[:1], "target": "hf", "options": {"A_floor": "0.3"}},
        io))
    conf = json.loads(_config_text(res, io))
    assert conf["ssm_cfg"]["A_floor"] == 0.3


def _config_text(res, io):
    (out,) = [o for o in res["plan"]["outputs"] if o["name"] == "config.json"]
    return b"".join(b"".join(convert_host.op_chunks(op, io)) for op in out["ops"]).decode()


def test_hints_that_disagree_with_the_file_are_refused(tmp_path):
    path = _to_mbjs(tmp_path, "mamba3-g1-r05-tied")            # heavy-tail: type 16
    layout = mbjs.read_layout(path)
    with pytest.raises(ValueError, match="hint a_heavy_tail=False disagrees with the file, "
                                         "which implies a_heavy_tail=True"):
        mbjs.infer_config(layout, {"a_heavy_tail": False})
    with pytest.raises(ValueError, match="hint n_groups=2 disagrees"):
        mbjs.infer_config(layout, {"n_groups": 2})


def _with_numels(path, numels, types=None):
    layout = mbjs.read_layout(path)
    head = mbjs.build_header(numels, types or layout.layer_types, 2)
    size = len(head) + 4 * sum(numels)
    return mbjs.parse_header(head + b"\0" * (size - len(head)), size, "t.bin")


def test_inconsistent_numels_and_types_are_named(tmp_path):
    path = _to_mbjs(tmp_path, "mamba3-g1-r05-tied")
    n = mbjs.read_layout(path).numels
    D = n[-1]
    bad = list(n)
    bad[1 + 8] = 5                         # a SISO layer (no mimo_x) with a mimo_z
    with pytest.raises(ValueError, match="t.bin: numel mismatch: layer 0 mimoZ has 5, "
                                         "expected 0 \\(SISO: no MIMO projections\\)"):
        mbjs.infer_config(_with_numels(path, bad))
    bad = list(n)
    bad[1] += D                            # layer 0: one in_proj row more than layer 1
    with pytest.raises(ValueError, match="t.bin: layer 1 dimensions .* differ from layer 0"):
        mbjs.infer_config(_with_numels(path, bad))
    bad[14] += D                           # both: 5 angle pairs, from no rope_fraction
    with pytest.raises(ValueError, match="t.bin: layer 0 rotates 5 angle pairs, which neither "
                                         "rope_fraction 0.5 nor 1.0 gives for d_state 16"):
        mbjs.infer_config(_with_numels(path, bad))
    bad[1] = bad[14] = (2 * 48 + 3 * 4 + 1) * D      # room for no B/C group
    with pytest.raises(ValueError, match="t.bin: numel mismatch: layer 0 inProj has 109 rows, "
                                         "which is not 2\\*48 \\+ 2\\*1\\*G\\*16"):
        mbjs.infer_config(_with_numels(path, bad))
    with pytest.raises(ValueError, match="are mixed; a Mamba-3 MBJS model has one A activation"):
        mbjs.infer_config(_with_numels(path, n, ["mambaweb-mamba3",
                                                  "mambaweb-mamba3-softplus"]))


def test_schedule_names_need_layer_type_names():
    cfg = _cfg("mamba3-g2-r05-tied-softplus")
    assert mbjs.layer_type_names(cfg) == ["mambaweb-mamba3-softplus"] * 2
    with pytest.raises(ValueError, match="MBJS layer type 'mamba3' has no id; known: .*"
                                         "layer_type_names"):
        mbjs.build_header([1, 1], cfg.layers, 2)


# --- the engine on the MBJS file (native backend: the same WGSL on the host) -----------------

MODEL_RUN = """
from py_engine.io.hf_loader import load_model_local
model = await load_model_local(device, args['folder'])
ids = [int(i) for i in args['ids']]
state = model.new_state()
fwd = await model.logits(ids, state)
state2 = model.new_state()
stp = await model.step_logits(ids, state2)
result = {'forward': fwd, 'step': stp, 'V': model.cfg.vocab_size}
for s in (state, state2):
    s.release()
model.release()
"""


@pytest.mark.parametrize("name", TIED)
def test_engine_logits_on_the_mbjs_file(tmp_path, name):
    from tools.native_engine import NativeEngine, wgpu_adapter_problem
    from tools.model_source import resolve_model
    problem = wgpu_adapter_problem()
    if problem is not None:
        pytest.skip(f"no native GPU adapter: {problem}")
    path = _to_mbjs(tmp_path, name)
    if _cfg(name).A_floor == 1e-4:
        dirs, model, cleanup = resolve_model(str(path), log=lambda *_: None)   # `mambaweb run`
        folder = dirs[0] / model
    else:   # A_floor is not stored: given back as the CLI's hint
        assert cli(["convert", str(path), str(tmp_path / "hf"), "--a-floor",
                    str(_cfg(name).A_floor)]) == 0
        folder, cleanup = tmp_path / "hf", (lambda: None)
    exp = np.load(FIX / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    eng = NativeEngine()
    try:
        out = eng.run(MODEL_RUN, folder=str(folder), ids=ids)
    finally:
        eng.close()
        cleanup()
    ref = exp["logits"].reshape(len(ids), out["V"])
    for way in ("forward", "step"):
        got = np.frombuffer(out[way], np.float32).reshape(len(ids), out["V"])
        assert np.abs(got - ref).max() <= 1e-4, (way, np.abs(got - ref).max())


def test_the_model_list_names_a_mamba3_mbjs_file_as_mamba3(tmp_path):
    """The server's model list reads the family from the file's layer types, not a fixed guess."""
    from server import model_catalog
    folder = tmp_path / "models"
    folder.mkdir()
    _to_mbjs(folder, TIED[0])
    got = {m["name"]: m for m in model_catalog.list_models([folder], hf_cache=False)}
    entry = got[TIED[0]]
    assert entry["format"] == "mbjs" and entry["supported"], entry
    assert entry["model_type"] == "mamba3" and entry["config"]["d_model"] == _cfg(TIED[0]).hidden_size
