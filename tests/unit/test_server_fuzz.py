"""The server under hostile and heavy use (issue 13, "The server"), against a real
`mambaweb serve` process on a free port:

  Range     thousands of generated Range headers, valid and malformed (RFC 9110 section 14):
            never a 5xx, never a byte outside the file, every byte sent equal to the file's;
            the RFC's own examples, suffix / overflowing / reversed / many small ranges and
            If-Range give the answers server/byte_ranges.py documents
  paths     traversal (plain, encoded, double-encoded, backslashes), NUL, overlong names,
            absolute paths, symlinks out of a model folder, on the weights, engine, static and
            pyodide routes: 400/404 and nothing of the target in the body; no directory
            listings; only GET/HEAD
  exposure  binds 127.0.0.1 by default, warns when bound elsewhere; no CORS headers unless
            origins are given
  load      50 concurrent clients x 200 random ranges over a sharded checkpoint, every byte
            checked, 0 errors
Requests that HTTP clients would normalise (dot segments, NUL) are sent on a raw socket.
"""
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import REPO
from tools.headless import free_port

SHARD_BYTES = (3 << 20) + 12345         # two shards of odd sizes, random bytes
SECRET = b"TOP-SECRET-CANARY-5d1f"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base url, {file name: bytes}) of a real `mambaweb serve` over one sharded model."""
    root = tmp_path_factory.mktemp("models")
    m = root / "sharded"
    m.mkdir()
    rng = random.Random(13)
    files = {}
    for k, size in enumerate((SHARD_BYTES, SHARD_BYTES - 777), 1):
        name = f"model-0000{k}-of-00002.safetensors"
        files[name] = rng.randbytes(size)
        (m / name).write_bytes(files[name])
    files["config.json"] = json.dumps({"model_type": "mamba"}).encode()
    (m / "config.json").write_bytes(files["config.json"])
    files["model.safetensors.index.json"] = json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors",
                        "b": "model-00002-of-00002.safetensors"}}).encode()
    (m / "model.safetensors.index.json").write_bytes(files["model.safetensors.index.json"])
    (m / "sub").mkdir()
    (m / "sub" / "inner.txt").write_bytes(b"inner")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.txt", m / "link-out.txt")
    os.symlink(outside, m / "dir-out")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "serve", "--port", str(port),
                             "--models", str(root), "--no-hf-cache"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(url + "/api/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("mambaweb serve did not start: "
                               + proc.stderr.read().decode(errors="replace"))
        time.sleep(0.1)
    yield url, files, outside
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


SHARD = "model-00001-of-00002.safetensors"


def weights_url(url, name=SHARD):
    return f"{url}/weights/sharded/{name}"


# --- checking a response against the file -----------------------------------------------------

_CR = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def check_response(r, data):
    """Assert r carries only bytes of `data`, at the offsets it says; returns the served
    (start, end) pieces (half-open) or "whole" / None."""
    assert r.status_code < 500, (r.status_code, r.text[:200])
    size = len(data)
    if r.status_code == 200:
        assert r.content == data
        return "whole"
    if r.status_code == 416:
        assert r.headers["content-range"] == f"bytes */{size}"
        return None
    if r.status_code == 400:
        assert len(r.content) < 1000
        return None
    assert r.status_code == 206, r.status_code
    ctype = r.headers["content-type"]
    if ctype.startswith("multipart/byteranges"):
        boundary = ctype.split("boundary=")[1]
        return check_multipart(r.content, boundary, data)
    m = _CR.match(r.headers["content-range"])
    a, b, total = map(int, m.groups())
    assert total == size and 0 <= a <= b < size
    assert int(r.headers["content-length"]) == b - a + 1 == len(r.content)
    assert r.content == data[a:b + 1]
    return [(a, b + 1)]


def check_multipart(body, boundary, data):
    pieces, pos = [], 0
    delim = f"--{boundary}".encode()
    while True:
        assert body.startswith(delim, pos), body[pos:pos + 80]
        pos += len(delim)
        if body.startswith(b"--", pos):
            break
        head_end = body.index(b"\r\n\r\n", pos)
        heads = dict(line.split(": ", 1) for line in
                     body[pos + 2:head_end].decode("latin-1").split("\r\n"))
        a, b, total = map(int, _CR.match(heads["Content-Range"]).groups())
        assert total == len(data) and 0 <= a <= b < len(data)
        start = head_end + 4
        assert body[start:start + b - a + 1] == data[a:b + 1]
        assert body[start + b - a + 1:start + b - a + 3] == b"\r\n"
        pos = start + b - a + 3
        pieces.append((a, b + 1))
    assert all(p[1] < q[0] for p, q in zip(pieces, pieces[1:])), "parts overlap or touch"
    return pieces


# --- Range: generated headers ---------------------------------------------------------------------

def _num(rng, size):
    return rng.choice([0, 1, size - 1, size, size + 1, rng.randrange(size), 10**30,
                       2**64, 2**63 - 1, rng.randrange(1 << 16)])


def _spec(rng, size):
    kind = rng.randrange(9)
    a, b = _num(rng, size), _num(rng, size)
    return [f"{a}-{b}", f"{a}-", f"-{b}", f"{b}-{a}", f"{a}", "-", f" {a} - {b} ",
            f"{a}-{b}-{a}", rng.choice(["x-1", "1-y", "+1-2", "0x10-20", "1_0-20", "-+5",
                                        "--5", "1.5-2", "١-٢", ""])][kind]


def random_range_header(rng, size):
    unit = rng.choice(["bytes"] * 8 + ["Bytes", "items", "", "bytes ", "by tes", "bytes=bytes"])
    specs = ",".join(_spec(rng, size) for _ in range(rng.choice([1, 1, 1, 2, 3, 7])))
    # strip: an HTTP field value has no leading/trailing whitespace (RFC 9110 5.5)
    return rng.choice([f"{unit}={specs}", f"{unit}{specs}", f"{unit}=={specs}"]).strip(" \t")


def test_fuzzed_ranges_never_5xx_never_outside_the_file(served):
    url, files, _ = served
    data = files[SHARD]
    rng = random.Random(9110)
    statuses = {}
    with httpx.Client(timeout=30) as client:
        for _ in range(1500):
            header = random_range_header(rng, len(data))
            r = client.get(weights_url(url), headers={"Range": header.encode("utf-8")})
            check_response(r, data)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    # the generator reaches every kind of answer
    assert set(statuses) == {200, 206, 400, 416}, statuses


def _oracle(header, size):
    """RFC 9110's meaning of a header built from a valid single int-range or suffix-range."""
    spec = header.split("=", 1)[1]
    first, _, last = spec.partition("-")
    if first == "":
        n = int(last)
        return None if n == 0 else (max(0, size - n), size)
    a = int(first)
    if a >= size:
        return None
    return (a, size if last == "" else min(int(last) + 1, size))


def test_valid_single_ranges_serve_exactly_what_rfc_9110_says(served):
    url, files, _ = served
    data = files[SHARD]
    size = len(data)
    rng = random.Random(14)
    with httpx.Client(timeout=30) as client:
        for _ in range(400):
            a = rng.choice([0, 1, size - 1, size, rng.randrange(size), 10**25])
            b = a + rng.choice([0, 1, 100, 70000, size, 10**25])
            header = rng.choice([f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b - a}"])
            r = client.get(weights_url(url), headers={"Range": header})
            want = _oracle(header, size)
            got = check_response(r, data)
            if want is None:
                assert r.status_code == 416, header
            else:
                assert got == [want], (header, got, want)


@pytest.mark.parametrize("header,status,pieces", [
    # RFC 9110 section 14.1.2's examples (size 10000 there; ours is bigger)
    ("bytes=0-499", 206, [(0, 500)]),
    ("bytes=500-999", 206, [(500, 1000)]),
    ("bytes=-500", 206, [(SHARD_BYTES - 500, SHARD_BYTES)]),
    ("bytes=9500-", 206, [(9500, SHARD_BYTES)]),
    ("bytes=0-0,-1", 206, [(0, 1), (SHARD_BYTES - 1, SHARD_BYTES)]),
    ("bytes= 0-999, 4500-5499, -1000", 206,
     [(0, 1000), (4500, 5500), (SHARD_BYTES - 1000, SHARD_BYTES)]),
    ("bytes=500-600,601-999", 206, [(500, 1000)]),      # touching: coalesced, one part
    ("bytes=500-700,601-999", 206, [(500, 1000)]),      # overlapping: coalesced
    ("BYTES=0-9", 206, [(0, 10)]),                      # the unit is case-insensitive
    ("bytes=0-99999999999999999999999999999", 206, [(0, SHARD_BYTES)]),   # last-pos overflow
    ("bytes=-99999999999999999999", 206, [(0, SHARD_BYTES)]),             # suffix overflow
    ("bytes=5-5", 206, [(5, 6)]),
    (f"bytes={SHARD_BYTES - 1}-", 206, [(SHARD_BYTES - 1, SHARD_BYTES)]),
    (f"bytes=0-1,{SHARD_BYTES}-", 206, [(0, 2)]),       # the unsatisfiable one is dropped
    (f"bytes={SHARD_BYTES}-", 416, None),
    (f"bytes={SHARD_BYTES}-{SHARD_BYTES + 5},{10**40}-", 416, None),
    ("bytes=-0", 416, None),                            # a zero-length suffix selects nothing
    ("items=0-5", 200, "whole"),                        # unknown unit: MUST be ignored
    ("0-5", 200, "whole"),
    ("bytes=5-4", 400, None),                           # reversed
    ("bytes=abc", 400, None),
    ("bytes=", 400, None),
    ("bytes=,", 400, None),
    ("bytes=+1-2", 400, None),                          # not 1*DIGIT
    ("bytes=1_0-20", 400, None),
    ("bytes=1-2-3", 400, None),
    ("bytes=--5", 400, None),
    ("bytes=0x10-0x20", 400, None),
    ("bytes =0-1", 400, None),                          # no whitespace before "="
])
def test_range_examples(served, header, status, pieces):
    url, files, _ = served
    r = httpx.get(weights_url(url), headers={"Range": header}, timeout=30)
    assert r.status_code == status, (header, r.status_code, r.text[:200])
    assert check_response(r, files[SHARD]) == pieces


def test_many_small_ranges(served):
    """50 separate ranges: one multipart/byteranges answer, parts in file order, each exact;
    above 100 ranges after coalescing the header is ignored (200, the whole file)."""
    url, files, _ = served
    data = files[SHARD]
    rng = random.Random(3)
    starts = rng.sample(range(0, len(data) - 100, 1000), 50)
    header = "bytes=" + ",".join(f"{s}-{s + rng.randrange(1, 90)}" for s in starts)
    r = httpx.get(weights_url(url), headers={"Range": header}, timeout=30)
    pieces = check_response(r, data)
    assert r.status_code == 206 and len(pieces) == 50
    assert [p[0] for p in pieces] == sorted(starts)
    many = "bytes=" + ",".join(f"{s}-{s + 3}" for s in range(0, 101 * 10, 10))
    r = httpx.get(weights_url(url), headers={"Range": many}, timeout=30)
    assert r.status_code == 200 and check_response(r, data) == "whole"


def test_if_range(served):
    url, files, _ = served
    data = files[SHARD]
    head = httpx.head(weights_url(url), timeout=30)
    etag, modified = head.headers["etag"], head.headers["last-modified"]
    assert head.headers["accept-ranges"] == "bytes" and int(head.headers["content-length"]) \
        == len(data)
    cases = [(etag, 206), (modified, 206), ('"stale-etag"', 200), ("W/" + etag, 200),
             ("Mon, 01 Jan 2001 00:00:00 GMT", 200), ("garbage", 200)]
    for value, status in cases:
        r = httpx.get(weights_url(url), headers={"Range": "bytes=10-19", "If-Range": value},
                      timeout=30)
        assert r.status_code == status, value
        check_response(r, data)
    # If-Range alone (no Range) changes nothing
    r = httpx.get(weights_url(url), headers={"If-Range": etag}, timeout=30)
    assert r.status_code == 200 and r.content == data


def test_head_with_range_sends_headers_only(served):
    url, files, _ = served
    r = httpx.head(weights_url(url), headers={"Range": "bytes=100-199"}, timeout=30)
    assert r.status_code == 206 and r.content == b""
    assert r.headers["content-range"] == f"bytes 100-199/{len(files[SHARD])}"
    assert r.headers["content-length"] == "100"


def test_static_and_pyodide_files_answer_ranges_the_same_way(served):
    url, _, _ = served
    whole = httpx.get(url + "/static/js/worker.mjs", timeout=30).content
    r = httpx.get(url + "/static/js/worker.mjs", headers={"Range": "bytes=10-29"}, timeout=30)
    assert r.status_code == 206 and r.content == whole[10:30]
    for header in ("bytes=5-4", "bytes=+1-2"):
        assert httpx.get(url + "/pyodide/pyodide.mjs", headers={"Range": header},
                         timeout=30).status_code == 400
    assert httpx.get(url + "/pyodide/pyodide.mjs", headers={"Range": "items=1-2"},
                     timeout=30).status_code == 200


# --- paths ---------------------------------------------------------------------------------------

def raw_get(url, path, method="GET"):
    """(status, body) of a request whose target is sent exactly as given (no client-side
    normalisation of dot segments or escapes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"{method} ".encode() + path.encode("latin-1")
                  + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status, raw.split(b"\r\n\r\n", 1)[-1]


TRAVERSALS = [
    "../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd", "..%252f..%252fetc%252fpasswd",
    "..\\..\\..\\etc\\passwd", "..%5c..%5c..%5cetc%5cpasswd", "%2e%2e%5c%2e%2e%5cetc%5cpasswd",
    "/etc/passwd", "%2fetc%2fpasswd", "//etc/passwd", "config.json%00.txt",
    "config.json\x00", "%00", "C:%5cWindows%5cwin.ini", "C:/Windows/win.ini",
    "....//....//etc/passwd", ".%2e/.%2e/etc/passwd", "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "a" * 300, "a/" * 2000 + "x", "b" * 5000,
]
ROUTES = ["/weights/sharded/", "/weights/", "/engine/", "/static/", "/pyodide/", "/"]


@pytest.mark.parametrize("route", ROUTES)
def test_traversal_and_odd_paths_are_refused_without_a_leak(served, route):
    url, _, outside = served
    leaks = [SECRET, b"root:x:", b"def create_app", b"[fonts]", b"[boot loader]"]
    extra = ([] if route != "/weights/sharded/" else
             ["link-out.txt", "dir-out/secret.txt", "dir-out", "sub/../../sharded/config.json",
              f"{outside}/secret.txt", "%2F" + str(outside).lstrip("/") + "%2Fsecret.txt"])
    targets = TRAVERSALS + extra + ["../../server/app.py", "..%2f..%2fserver%2fapp.py",
                                    "..%252f..%252fserver%252fapp.py"]
    for t in targets:
        status, body = raw_get(url, route + t)
        assert status in (400, 404, 405, 414, 431), (route + t[:80], status)
        assert not any(leak in body for leak in leaks), (route + t[:80], body[:200])


def test_no_directory_listings(served):
    url, _, _ = served
    for path in ["/static/", "/static/js/", "/static/js", "/pyodide/", "/weights/sharded/",
                 "/weights/sharded/sub/", "/weights/sharded/sub", "/weights/", "/engine/"]:
        status, body = raw_get(url, path)
        assert status in (404, 405), (path, status)
        assert b"worker.mjs" not in body and b"inner.txt" not in body and b"<li>" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_only_get_and_head(served, method):
    url, files, _ = served
    for path in ["/", "/pretrain", "/static/js/worker.mjs", "/pyodide/pyodide.mjs",
                 "/weights/sharded/config.json", "/engine/manifest.json", "/api/models"]:
        r = httpx.request(method, url + path, content=b"x" * 10, timeout=30)
        assert r.status_code == 405, (method, path, r.status_code)
        assert "access-control-allow-origin" not in r.headers
    for path in ["/", "/static/js/worker.mjs", "/weights/sharded/config.json",
                 "/engine/manifest.json"]:
        assert httpx.head(url + path, timeout=30).status_code == 200, path


# --- exposure ------------------------------------------------------------------------------------

def test_no_cors_headers_unless_asked(served, tmp_path):
    url, _, _ = served
    evil = {"Origin": "https://evil.example"}
    for path in ["/weights/sharded/config.json", "/api/models", "/", "/static/js/worker.mjs"]:
        r = httpx.get(url + path, headers=evil, timeout=30)
        assert r.status_code == 200 and not any(h.startswith("access-control-")
                                                for h in r.headers), path
    from fastapi.testclient import TestClient
    from server.app import create_app
    client = TestClient(create_app([tmp_path], use_hf_cache=False,
                                   cors_origins=["https://ok.example"]))
    r = client.get("/api/models", headers={"Origin": "https://ok.example"})
    assert r.headers["access-control-allow-origin"] == "https://ok.example"
    r = client.get("/api/models", headers=evil)
    assert "access-control-allow-origin" not in r.headers


def test_binds_loopback_by_default_and_warns_otherwise(monkeypatch, capsys):
    import argparse
    import uvicorn
    from tools import cmd_serve
    parser = argparse.ArgumentParser()
    cmd_serve.register(parser.add_subparsers())
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(k))
    for key in ("MAMBAWEB_MODEL_DIRS", "MAMBAWEB_NO_HF_CACHE", "MAMBAWEB_CORS_ORIGINS"):
        monkeypatch.delenv(key, raising=False)
    args = parser.parse_args(["serve"])
    assert args.host == "127.0.0.1"
    cmd_serve.run(args)
    assert calls[-1]["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        cmd_serve.run(parser.parse_args(["serve", "--host", host]))
        err = capsys.readouterr().err
        assert calls[-1]["host"] == host
        assert f"warning: binding {host} serves your model folders" in err


# --- load ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_50_clients_200_ranges_each_every_byte_checked(served):
    url, files, _ = served
    shards = [n for n in files if n.endswith(".safetensors")]
    errors, done = [], []
    t0 = time.time()

    def client(k):
        rng = random.Random(k)
        try:
            with httpx.Client(timeout=60) as c:
                for _ in range(200):
                    name = rng.choice(shards)
                    data = files[name]
                    a = rng.randrange(len(data))
                    b = min(len(data), a + rng.choice([1, 7, 256, 4096, 65536]))
                    r = c.get(weights_url(url, name), headers={"Range": f"bytes={a}-{b - 1}"})
                    if r.status_code != 206 or r.content != data[a:b] or \
                            r.headers["content-range"] != f"bytes {a}-{b - 1}/{len(data)}":
                        errors.append((name, a, b, r.status_code))
                    done.append(1)
        except Exception as e:      # a dropped connection is an error too, counted
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.time() - t0
    assert errors == [] and len(done) == 50 * 200, (errors[:5], len(done))
    assert elapsed < 60, f"50 x 200 ranges took {elapsed:.1f} s"
