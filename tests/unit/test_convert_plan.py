"""The convert page's planner (py_engine.io.convert_plan) on the host, without a browser.

Plans are executed here by a small numpy stand-in for the Worker's executor (the page's real
one is tested in tests/e2e/test_convert_page.py); the output must equal tools/convert_host.py's
byte for byte, and bad drops must get their plain messages.
"""
import base64
import itertools
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from py_engine.io import convert_plan
from tools import convert_host

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
quiet = dict(log=lambda *_: None)
IDS = itertools.count()


class HostIO:
    def __init__(self, paths):
        self.paths = paths

    async def read(self, fid, start, end):
        with open(self.paths[fid], "rb") as f:
            f.seek(start)
            return f.read(end - start)

    async def crc32(self, fid, start, end):
        return zlib.crc32(await self.read(fid, start, end))

    async def max_abs(self, fid, ranges, dtype):
        out = []
        for a, b in ranges:
            x = convert_host.to_f32(await self.read(fid, a, b), dtype)
            out.append(float(np.max(np.abs(x))) if x.size else 0.0)
        return out


def entries(folder, names=None, prefix=None):
    folder = Path(folder)
    paths = sorted(folder.iterdir()) if names is None else [folder / n for n in names]
    prefix = folder.name if prefix is None else prefix
    out, io = [], {}
    for i, p in enumerate(paths):
        fid = f"f{next(IDS)}"          # unique, like the Worker's registry ids
        io[fid] = p
        out.append({"id": fid, "path": f"{prefix}/{p.name}" if prefix else p.name,
                    "size": p.stat().st_size})
    return out, HostIO(io)


def drive(coro):
    """Run a coroutine whose awaits never suspend (HostIO's don't). Not asyncio.run: a
    session's Playwright fixture may already own this thread's event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("coroutine suspended")


def run(request, io):
    return drive(convert_plan.handle(request, io))


def execute(plan, io):
    """numpy stand-in for worker.mjs's cvExecute: {name: bytes}."""
    files = {}
    for out in plan["outputs"]:
        data = bytearray()
        for op in out["ops"]:
            kind = op["op"]
            if kind == "bytes":
                data += base64.b64decode(op["b64"])
            elif kind == "copy":
                data += drive(io.read(op["src"], op["start"], op["end"]))
            elif kind in ("cast", "flip"):
                a = convert_host.to_f32(drive(io.read(op["src"], op["start"], op["end"])),
                                        op["from"])
                if kind == "flip":
                    a = a.reshape(op["rows"], op["cols"])[:, ::-1]
                data += convert_host.from_f32(np.ascontiguousarray(a), op["to"])
            elif kind == "zeros":
                data += bytes(op["n"])
            elif kind == "crc_trailer":
                data += convert_host.mbjs.build_trailer(zlib.crc32(bytes(data)))
        assert len(data) == out["size"], out["name"]
        files[out["name"]] = bytes(data)
    return files


def host_files(dst):
    dst = Path(dst)
    if dst.is_file():
        return {dst.name: dst.read_bytes()}
    return {p.name: p.read_bytes() for p in dst.iterdir()}


@pytest.mark.parametrize("model, target, dtype", [
    ("mamba-d40-tied", "mbjs", "f32"),
    ("mamba-d40-tied-bf16", "mbjs", "f16"),
    ("mamba-d40-tied", "hf", "bf16"),
    ("mamba-d24-untied", "hf", "f16"),
    ("falcon-d40-untied-f16", "hf", "keep"),
    ("mamba-d24-untied-bf16", "hf", "f32"),
])
def test_hf_plans_match_host(tmp_path, model, target, dtype):
    files, io = entries(MODELS / model)
    res = run({"action": "plan", "files": files, "target": target, "dtype": dtype}, io)
    assert "error" not in res, res
    got = execute(res["plan"], io)
    dst = tmp_path / ("out.bin" if target == "mbjs" else "out")
    convert_host.convert(MODELS / model, dst, dtype=None if dtype == "keep" else dtype, **quiet)
    want = host_files(dst)
    if target == "mbjs":
        assert list(got.values()) == list(want.values())
    else:
        assert got == want


def test_mbjs_and_sharded_plans_match_host(tmp_path):
    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "m.bin", **quiet)
    files, io = entries(tmp_path, ["m.bin"], prefix="")
    res = run({"action": "plan", "files": files, "target": "hf", "dtype": "keep"}, io)
    convert_host.convert(tmp_path / "m.bin", tmp_path / "back", **quiet)
    assert execute(res["plan"], io) == host_files(tmp_path / "back")
    assert res["plan"]["download"] == "m-hf-float32.zip"

    convert_host.convert(MODELS / "mamba-d40-tied", tmp_path / "sh", shards=3, **quiet)
    files, io = entries(tmp_path / "sh")
    res = run({"action": "plan", "files": files, "target": "hf", "dtype": "keep"}, io)
    convert_host.convert(tmp_path / "sh", tmp_path / "single", **quiet)
    assert execute(res["plan"], io) == host_files(tmp_path / "single")


@pytest.mark.parametrize("model, names, target, needle", [
    ("mamba-d40-tied", ["expected.npz"], "hf", "neither an HF model file"),
    ("mamba-d40-tied", ["model.safetensors"], "hf", "came without config.json"),
    ("mamba-d40-tied", ["config.json"], "hf", "came without weights"),
    ("mamba-d24-untied", None, "mbjs", "untied LM head"),
    ("falcon-d24-tied", None, "mbjs", "Falcon-Mamba"),
])
def test_bad_drops_get_plain_messages(model, names, target, needle):
    files, io = entries(MODELS / model, names)
    res = run({"action": "plan", "files": files, "target": target}, io)
    assert needle in res.get("error", ""), res


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
    got = json.loads(execute(res["plan"], io)["config.json"])
    assert got["layer_norm_epsilon"] == 1e-6 and got["pad_token_id"] == 0
