"""py_engine/io/hub.py against a local server with the Hub's layout (tests/hub_fixture.py),
on the host through urllib: names parsed, files listed (with and without the Hub's API), sizes
known before any weight byte is read, and every failure one sentence naming the repo."""
import json

import pytest

from py_engine.app.model_card import describe, schedule_text
from py_engine.io.hub import HubError, HubSource, looks_like_repo, parse_repo, resolve_url
from py_engine.models.config import MambaConfig
from tests.async_run import run
from tests.hub_fixture import FIXTURES, HubServer, UrllibHTTP, make_repos


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return make_repos(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module", params=[True, False], ids=["hub-api", "plain-mirror"])
def hub(request, repos):
    with HubServer(repos, api=request.param) as h:
        yield h


def _inspect(hub, spec):
    repo, rev = parse_repo(spec)
    src = HubSource(hub.url, repo, rev, http=UrllibHTTP())
    return src, run(src.inspect())


def test_names_parse_like_the_hub():
    assert parse_repo("state-spaces/mamba-130m-hf") == ("state-spaces/mamba-130m-hf", "main")
    assert parse_repo(" org/name@refs/pr/1 ") == ("org/name", "refs/pr/1")
    assert looks_like_repo("a/b@v1.0") and not looks_like_repo("models/default/")
    assert not looks_like_repo("/abs/path") and not looks_like_repo("just-a-name")
    for bad in ("", "org", "org/name/extra", "../x/y", "org/..", "org/name@"):
        with pytest.raises(ValueError, match="is not a Hub model name: write it as org/name"):
            parse_repo(bad)
    assert resolve_url("https://hf.example/", "o/n", "refs/pr/1", "model.safetensors") == \
        "https://hf.example/o/n/resolve/refs%2Fpr%2F1/model.safetensors"
    with pytest.raises(ValueError, match="not an http"):
        resolve_url("ftp://x", "o/n", "main", "config.json")


def test_single_file_repo_size_before_download(hub):
    src, plan = _inspect(hub, "mambaweb-test/bytes-tiny")
    folder = FIXTURES / "bytes-tiny-stdlib"
    assert plan["weight_files"] == ["model.safetensors"]
    assert plan["weight_format"] == "safetensors"
    assert plan["total_bytes"] == (folder / "model.safetensors").stat().st_size
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= set(plan["files"])
    # small reads come back exact; a range of a weight file follows the 302 to the "CDN"
    assert run(src.read("config.json")) == (folder / "config.json").read_bytes()
    raw = (folder / "model.safetensors").read_bytes()
    assert run(src.read("model.safetensors", 8, 40)) == raw[8:40]


def test_revision_and_sharded_index(hub, repos):
    _, plan = _inspect(hub, "mambaweb-test/bytes-tiny@v1")
    assert plan["revision"] == "v1" and plan["label"] == "mambaweb-test/bytes-tiny@v1"
    _, plan = _inspect(hub, "mambaweb-test/mamba2-sharded")
    index = json.loads((repos["mambaweb-test/mamba2-sharded"] /
                        "model.safetensors.index.json").read_text())
    assert plan["weight_files"] == sorted(set(index["weight_map"].values()))
    assert len(plan["weight_files"]) == 2 and plan["weight_format"] == "safetensors, 2 shards"
    assert plan["total_bytes"] == index["metadata"]["total_size"]


def test_pytorch_bin_repo_is_named_as_such(hub):
    _, plan = _inspect(hub, "mambaweb-test/mamba2-ssm-bin")
    assert plan["weight_files"] == ["pytorch_model.bin"]
    assert plan["weight_format"].startswith("PyTorch .bin")
    assert plan["total_bytes"] == (FIXTURES / "mamba2-g1-tied-ssm-bin" /
                                   "pytorch_model.bin").stat().st_size


@pytest.mark.parametrize("spec, words", [
    ("gated-org/secret", "gated-org/secret on 127.0.0.1:{port} is gated or private (HTTP 401)"),
    ("nobody/nothing", "nobody/nothing was not found on 127.0.0.1:{port} (HTTP 404)"),
    ("private-org/x", "private-org/x was not found on 127.0.0.1:{port} (HTTP 401)"),
])
def test_gated_and_missing_repos_say_one_sentence(hub, spec, words):
    with pytest.raises(HubError) as e:
        _inspect(hub, spec)
    msg = str(e.value)
    assert words.format(port=hub.live.port) in msg and "\n" not in msg


def test_unknown_revision_and_gguf_only(hub):
    with pytest.raises(HubError) as e:
        _inspect(hub, "mambaweb-test/bytes-tiny@nope")
    # the Hub's API (and its resolve answers) say which part was wrong
    assert "revision 'nope'" in str(e.value) or "was not found" in str(e.value)
    with pytest.raises(HubError) as e:
        _inspect(hub, "mambaweb-test/gguf-only")
    msg = str(e.value)
    if "holds only GGUF" in msg:   # with a file list the format is named
        assert "tiny-Q4_K_M.gguf" in msg and "safetensors" in msg
    else:                          # a plain mirror cannot list: it says config.json is missing
        assert "has no config.json (HTTP 404)" in msg and "GGUF" in msg


def test_unreachable_endpoint():
    src = HubSource("http://127.0.0.1:9", "a/b", http=UrllibHTTP())
    with pytest.raises(HubError, match=r"could not reach the Hub endpoint http://127\.0\.0\.1:9"):
        run(src.inspect())


def test_model_card_from_a_config():
    cfg = MambaConfig.from_hf_dict(json.loads((FIXTURES / "nemotronh-mamf-tied" /
                                               "config.json").read_text()))
    card = describe("x", cfg, 12345, None, {"weight_files": ["model.safetensors"],
                                            "file_dtypes": ["BF16"]},
                    {"kind": "hub", "label": "o/n@v1", "endpoint": "http://h"})
    assert card["family"] == "Hybrid (NemotronH) (nemotron_h)"
    assert "(pattern " in card["schedule"] and card["parameters"] == "12.3k (12,345)"
    assert card["weights"] == "safetensors, bf16 in the file, f32 on the GPU"
    assert card["source"] == "Hub: o/n@v1 at http://h"
    assert card["tokenizer"].startswith("none") and "KV cache" in card["context"]
    assert schedule_text(["mamba1"] * 24) == "24 × mamba1"
    assert schedule_text(["mamba2", "mamba2", "attention", "mlp"]) == \
        "2 × mamba2, 1 × attention, 1 × mlp (pattern MM*-)"


def test_server_tells_the_page_its_hf_endpoint(monkeypatch):
    from fastapi.testclient import TestClient
    from server.app import create_app
    client = TestClient(create_app([], use_hf_cache=False))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert client.get("/api/hub").json() == {"endpoint": "https://huggingface.co"}
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080/")
    assert client.get("/api/hub").json() == {"endpoint": "http://mirror.example:8080"}
