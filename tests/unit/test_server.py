"""The HTTP server: pages, pinned Pyodide, content-hashed engine, weights with Range, safety."""
import json
import os
import re
import zipfile
import io

import pytest
from fastapi.testclient import TestClient

from server.app import create_app

BIG = 48 * 2**20  # big enough that serving must stream, not build the body in memory


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    m = root / "tiny"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    # Two large shards of known bytes: byte i of shard s is (i * 7 + s) % 251.
    pattern = bytes((i * 7) % 251 for i in range(251 * 7))
    for s in range(2):
        with open(m / f"model-0000{s + 1}-of-00002.safetensors", "wb") as f:
            block = bytes((b + s) % 251 for b in pattern)
            reps = BIG // len(block) + 1
            f.write((block * reps)[:BIG])
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("do not serve")
    os.symlink(outside / "secret.txt", m / "link-out.txt")
    return root


@pytest.fixture(scope="module")
def client(model_root):
    return TestClient(create_app([model_root], use_hf_cache=False))


def expected(shard, start, end):
    pattern = bytes((i * 7) % 251 for i in range(251 * 7))
    block = bytes((b + shard) % 251 for b in pattern)
    return bytes(block[i % len(block)] for i in range(start, end))


def test_pages_load(client):
    for path in ["/", "/pretrain", "/convert"]:
        r = client.get(path)
        assert r.status_code == 200 and "<nav>" in r.text and "engine-status" in r.text
    assert client.get("/static/js/worker.mjs").status_code == 200
    assert client.get("/nope").status_code == 404


def test_pyodide_is_served_locally(client):
    r = client.get("/pyodide/pyodide.mjs")
    assert r.status_code == 200 and "loadPyodide" in r.text
    assert client.head("/pyodide/pyodide.asm.wasm").status_code == 200


def test_engine_zip_is_content_addressed(client):
    m = client.get("/engine/manifest.json").json()
    assert re.fullmatch(r"/engine/engine-[0-9a-f]{16}\.zip", m["url"])
    r = client.get(m["url"])
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "py_engine/__init__.py" in names and "shaders/matmul.wgsl" in names
    assert client.get("/engine/engine-0000000000000000.zip").status_code == 404


def test_models_listed(client):
    models = client.get("/api/models").json()
    tiny = next(m for m in models if m["name"] == "tiny")
    assert "model-00001-of-00002.safetensors" in tiny["files"]


def test_range_requests(client):
    url = "/weights/tiny/model-00002-of-00002.safetensors"
    r = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-1999/{BIG}"
    assert r.content == expected(1, 1000, 2000)
    # far into the file, and a suffix range
    r = client.get(url, headers={"Range": f"bytes={BIG - 100}-"})
    assert r.status_code == 206 and r.content == expected(1, BIG - 100, BIG)
    r = client.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == expected(1, BIG - 10, BIG)
    # unsatisfiable
    r = client.get(url, headers={"Range": f"bytes={BIG}-{BIG + 10}"})
    assert r.status_code == 416
    # HEAD gives the size without a body
    r = client.head(url)
    assert r.status_code == 200 and int(r.headers["content-length"]) == BIG and r.content == b""
    assert r.headers.get("accept-ranges") == "bytes"


def test_full_get_streams(client):
    with client.stream("GET", "/weights/tiny/model-00001-of-00002.safetensors") as r:
        assert r.status_code == 200
        n = 0
        first = None
        for chunk in r.iter_bytes():
            first = first if first is not None else chunk[:100]
            n += len(chunk)
    assert n == BIG and first == expected(0, 0, 100)


@pytest.mark.parametrize("path", [
    "/weights/tiny/../../etc/passwd",
    "/weights/tiny/..%2f..%2fetc%2fpasswd",
    "/weights/tiny/%2e%2e/%2e%2e/etc/passwd",
    "/weights/tiny//etc/passwd",
    "/weights/tiny/%2fetc%2fpasswd",
    "/weights/..%2f/tiny/config.json",
    "/weights/tiny/link-out.txt",
    "/weights/nosuch/config.json",
    "/weights/tiny/missing.bin",
])
def test_nothing_outside_model_folders(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"do not serve" not in r.content and b"root:" not in r.content
