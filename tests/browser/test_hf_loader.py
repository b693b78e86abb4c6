"""The streaming HF loader: every GPU tensor equals the checkpoint's values, widened exactly
from BF16/F16, split as gpu_layout says; bad checkpoints fail with named errors and leave
nothing allocated."""
import numpy as np
import pytest

from py_engine.io import gpu_layout
from py_engine.models.config import MambaConfig
from tests.reference.mamba1_model_numpy import load_safetensors
from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIXTURES = REPO / "tests" / "fixtures" / "models"

LOAD_AND_DUMP = """
from py_engine.io.hf_loader import load_hf_model
events = []
before = device.pool.stats()['in_use']
cfg, weights = await load_hf_model(device, args['url'], progress=events.append)
result = {'tensors': {k: await t.to_bytes() for k, t in weights.items()},
          'progress': events[-1], 'in_use_delta': device.pool.stats()['in_use'] - before}
for t in weights.values():
    t.release()
"""


@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied-bf16", "mamba-d24-untied-f16"])
def test_loaded_tensors_equal_checkpoint(engine, server, name):
    import json
    out = engine.run(LOAD_AND_DUMP, url=f"{server.url}/weights/{name}/")
    ref = load_safetensors(FIXTURES / name / "model.safetensors")   # widened to float64
    cfg = MambaConfig.from_hf_dict(json.loads((FIXTURES / name / "config.json").read_text()))
    got = out["tensors"]
    expect_pieces = {}
    for hf_name, arr in ref.items():
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, hf_name, arr.shape):
            expect_pieces[piece] = arr.reshape(arr.shape[0], -1)[r0:r1].reshape(shape)
    assert set(got) == set(expect_pieces)
    for piece, ref_arr in expect_pieces.items():
        arr = np.frombuffer(got[piece], np.float32).reshape(ref_arr.shape)
        assert np.array_equal(arr, ref_arr.astype(np.float32)), piece  # exact, also for 16-bit
    p = out["progress"]
    assert p["tensors"] == p["total_tensors"] == len(ref) and p["bytes"] == p["total_bytes"] > 0
    assert p["mb_per_s"] > 0


BAD_LOAD = """
from py_engine.io.hf_loader import load_hf_model
before = device.pool.stats()['in_use']
try:
    await load_hf_model(device, args['url'])
    result = {'error': None}
except Exception as e:
    result = {'error': f'{type(e).__name__}: {e}'}
result['in_use_delta'] = device.pool.stats()['in_use'] - before
"""


def test_missing_model_is_a_clear_error(engine, server):
    out = engine.run(BAD_LOAD, url=f"{server.url}/weights/no-such-model/")
    assert "config.json" in out["error"] and "not found" in out["error"]
    assert out["in_use_delta"] == 0


def _copy_model(src, dst):
    import shutil
    shutil.copytree(FIXTURES / src, dst)
    return dst


def _bad_cases(root):
    """Broken checkpoints, each built from a good fixture: (folder name, expected words)."""
    import json
    import struct
    cases = []
    d = _copy_model("mamba-d40-tied", root / "bad-truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) - 100])
    cases.append(("bad-truncated", ["model.safetensors"]))

    d = _copy_model("mamba-d40-tied", root / "bad-header-length")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    (d / "model.safetensors").write_bytes(bytes(data))
    cases.append(("bad-header-length", ["header length", "past the end"]))

    d = _copy_model("mamba-d40-tied", root / "bad-shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["state_size"] = 16  # the weights are N=8
    (d / "config.json").write_text(json.dumps(cfg))
    cases.append(("bad-shape", ["A_log", "16", "8"]))

    d = _copy_model("mamba-d40-tied", root / "bad-arch")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    cases.append(("bad-arch", ["llama"]))

    d = _copy_model("mamba-d24-untied", root / "bad-missing")
    from safetensors.numpy import load_file, save_file
    t = load_file(d / "model.safetensors")
    del t["lm_head.weight"]
    save_file(t, d / "model.safetensors")
    cases.append(("bad-missing", ["lm_head.weight"]))
    return cases


def test_malformed_checkpoints_fail_with_named_errors(engine, server, scratch_models):
    for name, words in _bad_cases(scratch_models):
        out = engine.run(BAD_LOAD, url=f"{server.url}/weights/{name}/")
        assert out["error"] is not None, name
        for w in words:
            assert w in out["error"], (name, w, out["error"])
        assert out["in_use_delta"] == 0, name
