"""Model discovery (folders, a fake HF cache) and resolve_file's refusal to leave a model."""
import json
import os
import shutil

import pytest

from py_engine.models.config import MambaConfig
from server import model_catalog
from tools import convert_host
from tools.init_weights import init_weights, param_count

CFG = MambaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, state_size=4)


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-such-cache"))


@pytest.fixture
def models(tmp_path, no_cache):
    root = tmp_path / "models"
    w = init_weights(CFG)
    convert_host.write_hf(root / "tiny", CFG, w)
    (root / "tiny" / "tokenizer.json").write_text("{}")
    convert_host.write_hf(root / "sharded", CFG, w, "BF16", shards=2)
    (root / "mb").mkdir()
    convert_host.write_mbjs(root / "mb" / "weights.bin", CFG, w.__getitem__)
    convert_host.write_mbjs(root / "loose.bin", CFG, w.__getitem__, "f16")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (root / "broken" / "model.safetensors").write_bytes(
        (root / "tiny" / "model.safetensors").read_bytes())
    (tmp_path / "secret.txt").write_text("do not serve")
    return root


def test_lists_folder_models(models):
    got = {m["name"]: m for m in model_catalog.list_models([models], hf_cache=False)}
    assert set(got) == {"tiny", "sharded", "mb", "loose", "broken"}
    n = param_count(CFG)
    t = got["tiny"]
    assert t["source"] == "folder" and t["format"] == "hf" and t["supported"]
    assert t["files"] == ["config.json", "model.safetensors", "tokenizer.json"]
    assert t["architecture"] == "MambaForCausalLM" and t["model_type"] == "mamba"
    assert t["param_count"] == n and t["dtype"] == "F32"
    assert t["size_bytes"] == (models / "tiny" / "model.safetensors").stat().st_size
    s = got["sharded"]
    assert s["weights"] == ["model.safetensors.index.json",
                            "model-00001-of-00002.safetensors",
                            "model-00002-of-00002.safetensors"]
    assert s["param_count"] == n and s["dtype"] == "BF16"
    mb = got["mb"]
    assert mb["format"] == "mbjs" and mb["files"] == ["weights.bin"] and mb["dtype"] == "F32"
    # MBJS counts the zero biases it stores that HF leaves out
    assert mb["param_count"] > n and mb["config"]["hidden_size"] == 16
    assert got["loose"]["dtype"] == "F16"
    b = got["broken"]
    assert not b["supported"] and "model_type 'gpt2' is not supported" in b["error"]
    assert b["param_count"] == n          # still counted from the header


def test_resolve_file_inside(models):
    model_catalog.list_models([models], hf_cache=False)
    p = model_catalog.resolve_file("tiny", "model.safetensors")
    assert p == (models / "tiny" / "model.safetensors").resolve()
    assert model_catalog.resolve_file("mb", "weights.bin") == (models / "mb" / "weights.bin").resolve()
    assert model_catalog.resolve_file("loose", "loose.bin") == (models / "loose.bin").resolve()
    assert model_catalog.resolve_file("tiny", "missing.json") is None
    assert model_catalog.resolve_file("nobody", "config.json") is None


@pytest.mark.parametrize("rel", [
    "../secret.txt", "../../secret.txt", "/etc/passwd", "%2e%2e/secret.txt",
    "%2E%2E%2Fsecret.txt", "%252e%252e/secret.txt", "a/../../secret.txt", "..\\secret.txt",
    "C:/Windows/win.ini", "", ".", "./config.json", "tiny//config.json", "config.json\0",
    "../tiny/config.json", ".hidden",
])
def test_traversal_refused(models, rel):
    model_catalog.list_models([models], hf_cache=False)
    assert model_catalog.resolve_file("tiny", rel) is None


def test_loose_bin_serves_only_itself(models):
    model_catalog.list_models([models], hf_cache=False)
    # the loose file's "folder" is the models folder itself: nothing else in it is served
    assert model_catalog.resolve_file("loose", "tiny/config.json") is None
    assert model_catalog.resolve_file("loose", "mb/weights.bin") is None


def test_symlinks(models, tmp_path):
    os.symlink(tmp_path / "secret.txt", models / "tiny" / "out.txt")
    os.symlink("../../secret.txt", models / "tiny" / "rel_out.txt")
    os.symlink(tmp_path, models / "tiny" / "updir")
    os.symlink("model.safetensors", models / "tiny" / "alias.safetensors")
    model_catalog.list_models([models], hf_cache=False)
    assert model_catalog.resolve_file("tiny", "out.txt") is None
    assert model_catalog.resolve_file("tiny", "rel_out.txt") is None
    assert model_catalog.resolve_file("tiny", "updir/secret.txt") is None
    # a link inside the model's own folder is served (it resolves to the file it names)
    assert model_catalog.resolve_file("tiny", "alias.safetensors") == (models / "tiny" / "model.safetensors").resolve()


def _fake_cache(tmp_path, source_dir, repo="models--org--tiny", rev="a" * 40):
    """models--org--tiny/{blobs/<etag>, refs/main, snapshots/<rev>/<file> -> ../../blobs/<etag>}"""
    cache = tmp_path / "hub"
    r = cache / repo
    (r / "blobs").mkdir(parents=True)
    (r / "refs").mkdir()
    (r / "refs" / "main").write_text(rev)
    snap = r / "snapshots" / rev
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(source_dir.iterdir())):
        etag = f"{i:040x}"
        shutil.copyfile(f, r / "blobs" / etag)
        os.symlink(f"../../blobs/{etag}", snap / f.name)
    return cache, r, snap


def test_hf_cache_discovery(tmp_path, monkeypatch):
    src = tmp_path / "src"
    convert_host.write_hf(src, CFG, init_weights(CFG))
    cache, repo, snap = _fake_cache(tmp_path, src)
    _fake_cache(tmp_path, src, repo="models--other--model")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    got = {m["name"]: m for m in model_catalog.list_models([])}
    assert set(got) == {"org--tiny", "other--model"}      # names are single URL segments
    m = got["org--tiny"]
    assert m["repo_id"] == "org/tiny"
    assert m["source"] == "hf-cache" and m["supported"] and m["revision"] == "a" * 40
    assert m["files"] == ["config.json", "model.safetensors"]
    assert m["param_count"] == param_count(CFG)
    p = model_catalog.resolve_file("org--tiny", "model.safetensors")
    assert p is not None and p.parent == (repo / "blobs").resolve()
    assert model_catalog.resolve_file("org/tiny", "model.safetensors") == p
    # a snapshot link into another repo's blobs, or out of the cache, is refused
    other_blob = next((cache / "models--other--model" / "blobs").iterdir())
    os.symlink(other_blob, snap / "stolen.json")
    os.symlink(tmp_path / "src" / "config.json", snap / "outside.json")
    assert model_catalog.resolve_file("org/tiny", "stolen.json") is None
    assert model_catalog.resolve_file("org/tiny", "outside.json") is None
    assert model_catalog.resolve_file("org/tiny", "../../blobs/" + other_blob.name) is None
    # huggingface_hub 2.x may link repo blobs into the cache-wide store <cache>/blobs/
    store = cache / "blobs" / "ab"
    store.mkdir(parents=True)
    blob = next(b for b in (repo / "blobs").iterdir() if b.stat().st_size > 1000)
    shutil.move(blob, store / ("ab" + "0" * 62))
    os.symlink(store / ("ab" + "0" * 62), blob)
    model_catalog.list_models([])
    assert model_catalog.resolve_file("org/tiny", "model.safetensors") == \
        (store / ("ab" + "0" * 62)).resolve()


def test_app_call_style(models):
    # server/app.py passes the folder list on every call
    got = model_catalog.list_models([models], use_hf_cache=False)
    assert "tiny" in {m["name"] for m in got}
    assert model_catalog.resolve_file([models], "tiny", "config.json", use_hf_cache=False) == \
        (models / "tiny" / "config.json").resolve()
    assert model_catalog.resolve_file([models], "tiny", "../secret.txt",
                                      use_hf_cache=False) is None
    assert all("/" not in m["name"] for m in got)


def test_missing_or_corrupt_cache_is_tolerated(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nothing-here"))
    assert model_catalog.list_models([tmp_path / "no-folder"]) == []
    bad = tmp_path / "bad"
    (bad / "models--x--y").mkdir(parents=True)   # no snapshots/: huggingface_hub complains
    monkeypatch.setenv("HF_HUB_CACHE", str(bad))
    assert model_catalog.list_models([]) == []
