"""Mamba-2's chunked forward on shaders/ssd_chunked.wgsl (ops/ssd.py path "parallel", what real
GPUs run) against ssd_forward.wgsl's chunk kernels (what CPU adapters run), through whole models
on the native backend (wgpu-py, the same WGSL): logits, a state carried into a second call, and
every gradient of a training step (the backward reads the forward's chunk start states). The
kernel checks against the float64 recurrence are tests/browser/test_kernels_ssd.py's (both paths).
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import json
import types

import numpy as np
import pytest

from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: E402,F401

MODELS = REPO / "tests" / "fixtures" / "models"


def test_real_gpus_spread_the_chunks(monkeypatch):
    """By rule the spread kernels run on a real GPU, the 64-thread ones on a CPU adapter; the
    device attribute and MAMBAWEB_SSD_PARALLEL override it, and anything else is refused."""
    from py_engine.ops import ssd
    from tests.unit._rule_checks import check_real_gpu_rule
    check_real_gpu_rule(monkeypatch, ssd.chunks_spread, "ssd_parallel", "MAMBAWEB_SSD_PARALLEL")


def test_spread_chunk_runs_at_the_asked_chunk_where_it_fits(monkeypatch):
    """The spread path's chunk: the asked L up to 32 (the rule) or what MAMBAWEB_SSD_CHUNK /
    device.ssd_chunk sets, where a block of its operands fits the workgroup memory beside the
    fixed tiles and its out tiles the threads; else 0, the 64-thread kernels at the same L (never
    a shorter chunk: the chunk states grow as 1 / L). mamba2-130m's heads (P 64, N 128) fit L 32
    in WebGPU's default 16 KiB, in blocks of 15 vec4s of B (states) and 7 dims (out); an H200's
    48 KiB takes all 32 and 71."""
    from py_engine.ops import ssd
    monkeypatch.setenv("MAMBAWEB_SSD_PARALLEL", "1")
    monkeypatch.delenv("MAMBAWEB_SSD_CHUNK", raising=False)
    dev = lambda kib: types.SimpleNamespace(  # noqa: E731
        info={"is_fallback": False}, limits={"maxComputeWorkgroupStorageSize": kib * 1024})
    assert ssd.spread_blocks(dev(16), 32, 64, 128) == (15, 7, 512 + 32 * 15, 768 + 7 * 32)
    assert ssd.spread_blocks(dev(48), 32, 64, 128)[:2] == (32, 71)
    for kib in (16, 32, 48):
        nbs, nbo, vs, vo = ssd.spread_blocks(dev(kib), 32, 64, 128)
        assert 16 * max(vs, vo) + 4 * 64 <= kib * 1024
    d = dev(48)
    d.ssd_block = 5                               # tests cap the blocks
    assert ssd.spread_blocks(d, 32, 64, 128)[:2] == (5, 5)
    assert ssd.spread_chunk(dev(16), 32, 64, 128) == 32
    assert ssd.spread_chunk(dev(48), 256, 64, 128) == 32
    assert ssd.spread_chunk(dev(4), 32, 64, 128) == 0        # not even one dim a block
    assert ssd.spread_chunk(dev(48), 32, 256, 16) == 0       # 8 x 64 out tiles > 256 threads
    assert ssd.spread_chunk(dev(48), 16, 256, 16) == 16
    assert ssd.forward_path(dev(16), 1024, 32, 64, 128) == ("parallel", 32)
    assert ssd.forward_path(dev(4), 1024, 32, 64, 128) == ("chunked", 32)
    assert ssd.forward_path(dev(48), 32, 32, 64, 128) == ("one", 32)
    monkeypatch.setenv("MAMBAWEB_SSD_CHUNK", "8")
    assert ssd.forward_path(dev(48), 1024, 32, 64, 128) == ("parallel", 8)
    d = dev(32)
    d.ssd_chunk = 16
    assert ssd.forward_path(d, 1024, 32, 64, 128) == ("parallel", 16)
    monkeypatch.setenv("MAMBAWEB_SSD_CHUNK", "12")
    with pytest.raises(ValueError, match="MAMBAWEB_SSD_CHUNK must be one of 4, 8, 16, 32"):
        ssd.spread_chunk(dev(48), 32, 64, 128)


@pytest.mark.parametrize("case,block", [("real-head-N128-P64", 5), ("N5-P12-L8", 1),
                                        ("6chunks-G3", 1), ("dt-clamp-B2", 3)])
def test_spread_kernels_in_small_blocks(engine, case, block):
    """The kernel suite's forward (== the float64 recurrence) with ssd_chunked.wgsl's operands
    in blocks capped by device.ssd_block, where the device would take them whole or nearly:
    the real head's 128 dims in 26 blocks of 5 (the last of 3) and B's 32 vec4s in 7; N 5 in
    five blocks of one dim and B's two vec4s (the second holding one dim) in two; N 4 in two."""
    from tests.browser import test_kernels_ssd as KS
    (c,) = [c for c in KS.FWD_CASES if c.id == case]
    engine.device.ssd_block = block
    try:
        KS.test_ssd_forward_step_reference(engine, *c.values, True)
    finally:
        engine.device.ssd_block = None


MODEL_CODE = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train.trainer import Trainer
m = await load_model_local(device, args['folder'], weights_format='f32')
ids = args['ids']
out = {}
try:
    for side in (False, True):
        device.ssd_parallel = side
        out[f'{side}'] = await m.logits(ids)                 # fresh: x, B, C views of the conv
        st = m.new_state()
        await m.logits(ids[:20], st)                         # then a state carried into a second
        out[f'{side}_cont'] = await m.logits(ids[20:], st)
        st.release()
        tr = Trainer(m, lr=1e-2, max_grad_norm=0.0)
        grads, loss = await tr.gradients(ids[:-1] * 2, ids[1:] * 2, 2, len(ids) - 1)
        out[f'{side}_loss'] = loss
        out[f'{side}_grads'] = grads
        tr.release()
finally:
    device.ssd_parallel = None
m.release()
result = out
"""


@pytest.mark.parametrize("name", ["mamba2-g2-untied", "nemotronh-mamf-untied"])
def test_model_logits_and_gradients_with_the_chunks_spread(engine, name):
    """A Mamba-2 model (chunks of 16: three, the last short) and a NemotronH hybrid (chunks of
    12: four): prefill of 45 tokens, a continued one, the loss and every gradient of a
    two-sequence batch equal the 64-thread kernels' -- bit for bit on lavapipe, where the
    compiler fuses the same multiply-adds in both (the two paths add the same terms in the same
    order), else to 1e-6 of each tensor's largest value."""
    folder = MODELS / name
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    ids = np.random.default_rng(7).integers(0, vocab, 45).tolist()
    r = engine.run(MODEL_CODE, folder=str(folder), ids=ids)
    tol = 0.0 if "llvmpipe" in str(engine.info.get("adapter", {}).get("device", "")) else 1e-6
    for key in ("", "_cont"):
        a = np.frombuffer(r["False" + key], np.float32)
        b = np.frombuffer(r["True" + key], np.float32)
        assert np.abs(a).max() > 0.05
        assert np.abs(a - b).max() <= tol * np.abs(a).max(), key
    assert abs(r["False_loss"] - r["True_loss"]) <= tol * abs(r["False_loss"])
    ga, gb = r["False_grads"], r["True_grads"]
    assert set(ga) == set(gb) and ga
    for piece in ga:
        a, b = np.frombuffer(ga[piece], np.float32), np.frombuffer(gb[piece], np.float32)
        scale = np.abs(a).max()
        assert scale > 0, piece
        assert np.abs(a - b).max() <= tol * scale, (piece, np.abs(a - b).max() / scale)
