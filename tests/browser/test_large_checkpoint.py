"""Byte-range streaming of a checkpoint too large to hold comfortably in the page: a sharded
random model of a few hundred MB, generated at test time (never committed), loaded over HTTP
ranges straight into GPU buffers, every tensor checked by an exact GPU checksum."""
import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOAD = """
import time
from py_engine.io.hf_loader import load_hf_model
from py_engine.ops.reduce import checksum
t0 = time.perf_counter()
cfg, weights = await load_hf_model(device, args['url'])
load_s = time.perf_counter() - t0
b = device.batch()
parts = {name: checksum(b, t) for name, t in weights.items()}
b.submit()
sums = {}
for name, p in parts.items():
    import struct
    raw = await p.to_bytes()
    sums[name] = sum(struct.unpack(f'<{len(raw) // 4}I', raw)) & 0xFFFFFFFF
    p.release()
total = sum(t.nbytes for t in weights.values())
for t in weights.values():
    t.release()
result = {'sums': sums, 'load_s': load_s, 'bytes': total, 'pool': device.pool.stats()}
"""


def host_checksum(arr):
    w = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32).ravel().astype(np.uint64)
    i = np.arange(w.size, dtype=np.uint64)
    mult = (np.uint64(2654435761) * i + np.uint64(1)) & np.uint64(0xFFFFFFFF)
    return int(((w * mult) & np.uint64(0xFFFFFFFF)).sum() & np.uint64(0xFFFFFFFF))


def test_sharded_few_hundred_mb_model_streams_exactly(engine, server, scratch_models):
    from py_engine.io import gpu_layout
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    cfg = make_config("nano", hidden_size=512, num_hidden_layers=4, vocab_size=50280,
                      tie_word_embeddings=False)
    weights = init_weights(cfg, 3)
    folder = scratch_models / "big-sharded"
    convert_host.write_hf(folder, cfg, weights, "F32", shards=3)
    disk = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    assert disk > 200e6 and len(list(folder.glob("*.safetensors"))) == 3
    out = engine.run(LOAD, url=f"{server.url}/weights/big-sharded/", timeout=600_000)
    expected = {}
    for name, arr in weights.items():
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, name, arr.shape):
            expected[piece] = host_checksum(arr.reshape(arr.shape[0], -1)[r0:r1])
    assert out["sums"] == expected
    assert out["bytes"] >= disk - 1e6
