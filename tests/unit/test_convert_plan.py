"""The one conversion planner (py_engine.io.convert_plan) on the host, without a browser.

Both executors -- the tab's (web/js/worker.mjs, tested against this one in
tests/e2e/test_convert_page.py) and tools/convert_host.py's numpy one -- run its plans. Here:
the page's request (handle(), dropped-folder paths, options) plans exactly what `mambaweb
convert` runs; plans reproduce independent references byte for byte (the files transformers
wrote, mamba_ssm's layouts incl. pytorch_model.bin); bad drops get their plain messages.
"""
import json
from pathlib import Path

import pytest

from py_engine.io import convert_plan
from tools import convert_host

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
TRANSFORMERS_D40 = (MODELS / "mamba-d40-tied" / "model.safetensors").read_bytes()
quiet = dict(log=lambda *_: None)


def entries(folder, names=None, prefix=None):
    """Files as the page lists a drop ([{id, path, size}]), and a HostIO reading them."""
    folder = Path(folder)
    paths = sorted(folder.iterdir()) if names is None else [folder / n for n in names]
    prefix = folder.name if prefix is None else prefix
    io = convert_host.HostIO()
    return [io.add_file(p, f"{prefix}/{p.name}" if prefix else p.name) for p in paths], io


def run(request, io):
    return convert_host.sync(convert_plan.handle(request, io))


def execute(plan, io, dst):
    convert_host.execute(plan, io, dst)
    return {p.name: p.read_bytes() for p in Path(dst).iterdir()}


def by_path(plan, files):
    """The plan with file ids replaced by the files' names (ids differ between runs)."""
    name = {e["id"]: e["path"].rsplit("/", 1)[-1] for e in files}
    text = json.dumps(plan, sort_keys=True)
    for fid, n in name.items():
        text = text.replace(json.dumps(fid), json.dumps(n))
    return json.loads(text)


def host_plan(src, target, dtype, **options):
    io = convert_host.HostIO()
    files = ([io.add_file(src, src.name)] if src.is_file()
             else convert_host.folder_entries(io, src))
    source = convert_host.sync(convert_plan.inspect(files, io))
    return by_path(convert_host.sync(convert_plan.plan(source, target, dtype, options, io)),
                   files)


@pytest.mark.parametrize("model, target, dtype", [
    ("mamba-d40-tied", "mbjs", "f32"),
    ("mamba-d40-tied-bf16", "mbjs", "f16"),
    ("mamba-d40-tied", "hf", "bf16"),
    ("mamba-d24-untied", "hf", "f16"),
    ("falcon-d40-untied-f16", "hf", "keep"),
    ("mamba2-g2-untied", "hf", "bf16"),
    ("mamba2-g1-tied-ssm-bin", "hf", "f16"),
])
def test_page_request_plans_what_the_host_runs(model, target, dtype):
    files, io = entries(MODELS / model)
    res = run({"action": "plan", "files": files, "target": target, "dtype": dtype}, io)
    assert "error" not in res, res
    page = by_path(res["plan"], files)
    assert page == host_plan(MODELS / model, target, None if dtype == "keep" else dtype)
    kinds = {op["op"] for out in page["outputs"] for op in out["ops"]}
    assert kinds <= {"bytes", "copy", "cast", "flip", "zeros", "crc_trailer"}
    assert page["total"] == sum(o["size"] for o in page["outputs"])


def test_keep_dtype_reproduces_transformers_files(tmp_path):
    # transformers wrote the fixture: the planner's header bytes and order are the same
    files, io = entries(MODELS / "mamba-d40-tied")
    res = run({"action": "plan", "files": files, "target": "hf", "dtype": "keep"}, io)
    got = execute(res["plan"], io, tmp_path / "out")
    assert got["model.safetensors"] == TRANSFORMERS_D40
    assert got["generation_config.json"] == (MODELS / "mamba-d40-tied" /
                                             "generation_config.json").read_bytes()
    assert res["plan"]["download"] == "mamba-d40-tied-float32.zip"
    # ... and so does joining shards the planner laid out
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "sh", shards=3, **quiet)
    index = json.loads((tmp_path / "sh" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    files, io = entries(tmp_path / "sh")
    res = run({"action": "plan", "files": files, "target": "hf", "dtype": "keep"}, io)
    assert "joined 3 shards into one model.safetensors" in res["plan"]["notes"]
    got = execute(res["plan"], io, tmp_path / "single")
    assert got["model.safetensors"] == TRANSFORMERS_D40


@pytest.mark.parametrize("layout", ["mamba2-g1-tied-ssm", "mamba2-g1-tied-ssm-bin"])
def test_mamba_ssm_folders_become_the_transformers_folder(tmp_path, layout):
    """mamba_ssm's names (backbone.embedding), its saved tied head, its config.json and
    pytorch_model.bin (read without torch) plan into the file transformers wrote."""
    files, io = entries(MODELS / layout)
    res = run({"action": "inspect", "files": files}, io)
    fmt = "PyTorch .bin" if layout.endswith("bin") else "safetensors"
    assert f"1 {fmt} file(s)" in res["source"]["summary"]
    assert res["source"]["model_type"] == "mamba2" and res["source"]["propose"] == "hf"
    res = run({"action": "plan", "files": files, "target": "hf", "dtype": "keep"}, io)
    got = execute(res["plan"], io, tmp_path / "out")
    want = (MODELS / "mamba2-g1-tied" / "model.safetensors").read_bytes()
    assert got["model.safetensors"] == want
    conf = json.loads(got["config.json"])
    assert conf["model_type"] == "mamba2" and conf["dtype"] == "float32"


def test_sharded_pytorch_bin_with_index(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    sd = load_file(MODELS / "mamba2-g2-untied" / "model.safetensors")
    names = sorted(sd)
    shards = {"pytorch_model-00001-of-00002.bin": names[:5],
              "pytorch_model-00002-of-00002.bin": names[5:]}
    src = tmp_path / "bin-shards"
    src.mkdir()
    for fname, part in shards.items():
        torch.save({n: sd[n] for n in part} | {"step": torch.tensor(3)}, src / fname)
    (src / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {n: f for f, part in shards.items() for n in part}}))
    (src / "config.json").write_bytes((MODELS / "mamba2-g2-untied" / "config.json").read_bytes())
    convert_host.convert(src, tmp_path / "out", **quiet)      # "step" (an I64) is skipped
    assert ((tmp_path / "out" / "model.safetensors").read_bytes()
            == (MODELS / "mamba2-g2-untied" / "model.safetensors").read_bytes())
    files, io = entries(src, ["config.json", "pytorch_model-00001-of-00002.bin",
                              "pytorch_model.bin.index.json"])
    err = run({"action": "inspect", "files": files}, io)["error"]
    assert "pytorch_model-00002-of-00002.bin, which was not dropped" in err


def test_mamba2_to_mbjs_refused_by_name(tmp_path):
    files, io = entries(MODELS / "mamba2-g1-tied")
    res = run({"action": "plan", "files": files, "target": "mbjs", "dtype": "f32"}, io)
    assert "layer 0 is 'mamba2'" in res["error"] and "HF safetensors" in res["error"]
    with pytest.raises(ValueError, match="layer 0 is 'mamba2'"):
        convert_host.convert(MODELS / "mamba2-g1-tied", tmp_path / "m.bin", **quiet)
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize("model, names, target, needle", [
    ("mamba-d40-tied", ["expected.npz"], "hf", "neither an HF model file"),
    ("mamba-d40-tied", ["model.safetensors"], "hf", "came without config.json"),
    ("mamba2-g1-tied-ssm-bin", ["pytorch_model.bin"], "hf", "came without config.json"),
    ("mamba-d40-tied", ["config.json"], "hf", "came without weights"),
    ("mamba-d24-untied", None, "mbjs", "untied LM head"),
    ("falcon-d24-tied", None, "mbjs", "Falcon-Mamba"),
])
def test_bad_drops_get_plain_messages(model, names, target, needle):
    files, io = entries(MODELS / model, names)
    res = run({"action": "plan", "files": files, "target": target}, io)
    assert needle in res.get("error", ""), res


def test_legacy_pickle_named(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00." + bytes(64))
    files, io = entries(tmp_path, ["pytorch_model.bin"], prefix="")
    err = run({"action": "inspect", "files": files}, io)["error"]
    assert "legacy (pre-1.6) pickle format" in err and "Drop an HF model folder" in err


def test_shards_and_mbjs_options_refused(tmp_path):
    with pytest.raises(ValueError, match="MBJS is a single file"):
        convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "m.bin", shards=2, **quiet)
    with pytest.raises(ValueError, match="MBJS v3 stores f16, not f32"):
        convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "m.bin", dtype="f32",
                             mbjs_version=3, **quiet)


def test_missing_shard_named(tmp_path):
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "sh", shards=2, **quiet)
    names = [p.name for p in (tmp_path / "sh").iterdir() if "-00002-of" not in p.name]
    files, io = entries(tmp_path / "sh", names)
    res = run({"action": "inspect", "files": files}, io)
    assert "model-00002-of-00002.safetensors, which was not dropped" in res["error"]


def test_corrupt_mbjs_crc(tmp_path):
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "m.bin", **quiet)
    raw = bytearray((tmp_path / "m.bin").read_bytes())
    raw[200] ^= 1
    (tmp_path / "m.bin").write_bytes(bytes(raw))
    files, io = entries(tmp_path, ["m.bin"], prefix="")
    assert "CRC mismatch" in run({"action": "inspect", "files": files}, io)["error"]


def test_mbjs_with_config_keeps_settings(tmp_path):
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "m.bin", **quiet)
    conf = json.loads((MODELS / "mamba-d40-tied" / "config.json").read_text())
    conf["layer_norm_epsilon"] = 1e-6
    (tmp_path / "config.json").write_text(json.dumps(conf))
    files, io = entries(tmp_path, ["m.bin", "config.json"], prefix="")
    res = run({"action": "plan", "files": files, "target": "hf"}, io)
    got = json.loads(execute(res["plan"], io, tmp_path / "out")["config.json"])
    assert got["layer_norm_epsilon"] == 1e-6 and got["pad_token_id"] == 0
    # the page's epsilon field wins over the config, as --layer-norm-epsilon does on the host
    res = run({"action": "plan", "files": files, "target": "hf",
               "options": {"layer_norm_epsilon": "1e-4"}}, io)
    got = json.loads(execute(res["plan"], io, tmp_path / "out2")["config.json"])
    assert got["layer_norm_epsilon"] == 1e-4
    # and the MBJS -> HF plan round-trips to the original tensors
    res = run({"action": "plan", "files": files[:1], "target": "hf"}, io)
    got = execute(res["plan"], io, tmp_path / "back")
    assert got["model.safetensors"] == TRANSFORMERS_D40
    assert res["plan"]["download"] == "m-hf-float32.zip"
