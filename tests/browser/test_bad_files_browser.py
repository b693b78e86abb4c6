"""Bad checkpoints loaded by the engine in the browser (over HTTP from the test server): the
message names the file / tensor / field, and the device's live-buffer count (buffers checked
out of the pool, py_engine/gpu/pool.py `in_use`) returns to its value before the attempt --
also when the failure comes in the middle of streaming tensors (a dropped connection after the
first shard of a bf16 checkpoint, whose staging buffers must be released too).
`mambaweb run` on such a folder exits non-zero with the message and no traceback."""
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_bad_files import (_cfg, _missing_shard, copy_model, edit_config,
                                       shard)

pytestmark = pytest.mark.browser

ATTEMPT = """
from py_engine.io.byte_sources import HttpSource
from py_engine.io.hf_loader import load_from_source

class DroppingSource(HttpSource):
    # the connection drops on the n-th tensor read (0: never)
    reads = 0
    async def read_to_buffers(self, *a):
        DroppingSource.reads += 1
        if DroppingSource.reads == args['drop_on_read']:
            raise OSError('connection dropped (injected by the test)')
        await super().read_to_buffers(*a)

# the page may still be loading its default model when the first test runs: wait until the
# live-buffer count has stood still for a second, so the delta below is ours alone
import asyncio
stable, last = 0, None
while stable < 4:
    now = device.pool.stats()['in_use']
    stable = stable + 1 if now == last else 0
    last = now
    await asyncio.sleep(0.25)
before = device.pool.stats()['in_use']
try:
    cfg, weights = await load_from_source(device, DroppingSource(args['url']))
    result = {'error': None, 'tensors': len(weights)}
    for t in weights.values():
        t.release()
except Exception as e:
    result = {'error': f'{type(e).__name__}: {e}'}
result['reads'] = DroppingSource.reads
result['in_use_delta'] = device.pool.stats()['in_use'] - before
"""


def _place(scratch_models, name, base, build):
    d = scratch_models / name
    if d.exists():
        shutil.rmtree(d)
    shutil.move(str(copy_model(scratch_models / f"tmp-{name}", base)), d)
    shutil.rmtree(scratch_models / f"tmp-{name}")
    build(d)
    return d


def _bin_with_code(d):
    import os
    import torch
    torch.save({"w": torch.zeros(2), "f": os.system}, d / "pytorch_model.bin")


CASES = [
    ("bb-missing-shard", "mamba-d40-tied", _missing_shard,
     ["model-00002-of-00002.safetensors", "not found"]),
    ("bb-10e12-params", "mamba-d40-tied", _cfg(vocab_size=25_000_000_000),
     ["config.json", "describe 1,000,000,025,240 parameters", "more than 40,000,000,000"]),
    ("bb-vocab-vs-embedding", "mamba-d40-tied-bf16", _cfg(vocab_size=64),
     ["vocab_size is 64 but the tensor has 101 rows"]),
    ("bb-bin-code", "mamba2-g1-tied-ssm-bin", _bin_with_code,
     ["pytorch_model.bin", "references the global posix.system"]),
    ("bb-empty-safetensors", "mamba-d40-tied",
     lambda d: (d / "model.safetensors").write_bytes(b""),
     ["model.safetensors", "0 bytes is too short for a safetensors file"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_with_message_and_no_live_buffers(engine, server, scratch_models, case):
    name, base, build, words = case
    _place(scratch_models, name, base, build)
    out = engine.run(ATTEMPT, url=f"{server.url}/weights/{name}/", drop_on_read=0)
    assert out["error"] is not None, out
    for w in words:
        assert w in out["error"], (w, out["error"])
    assert out["reads"] == 0, out     # refused before a single tensor byte was requested
    assert out["in_use_delta"] == 0


def test_connection_dropped_mid_stream_releases_everything(engine, server, scratch_models):
    """Shard 1 of a bf16 checkpoint lands on the GPU (its tensors and staging buffers), then
    the read of shard 2 fails: every tensor and staging buffer goes back to the pool."""
    _place(scratch_models, "bb-dropped", "mamba-d40-tied-bf16", shard)
    url = f"{server.url}/weights/bb-dropped/"
    ok = engine.run(ATTEMPT, url=url, drop_on_read=0)
    assert ok["error"] is None and ok["reads"] == 2 and ok["in_use_delta"] == 0
    out = engine.run(ATTEMPT, url=url, drop_on_read=2)
    assert out["error"] == "OSError: connection dropped (injected by the test)"
    assert out["in_use_delta"] == 0


def test_cli_run_on_a_refused_folder(tmp_path):
    d = copy_model(tmp_path)
    edit_config(d, state_size=16)
    p = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--model", str(d),
                        "--ids", "1,2", "--max-new-tokens", "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("mambaweb run: "), p.stderr
    assert "backbone.layers.0.mixer.A_log: expected shape [80, 16], found [80, 8]" in p.stderr
    assert p.stdout == ""

