"""Weights larger than one GPU binding, held as row blocks (py_engine/gpu/row_chunks.py), on the
native backend (wgpu-py on lavapipe here).

A tiny model with a large vocabulary (2400 x 32) loaded under a 64 KiB binding cap
(Device.binding_cap) holds its embedding and LM head as 5 row blocks; everything else fits. The
split model must compute what the whole one computes: prompt logits (GEMM), step logits (plain
kernels and the fused mat-vec), greedy tokens through the recorded decode graph (one submit per
group), every weight format; training gradients, AdamW steps and a saved / restored training
state. What cannot fit is refused before any weight byte is read, in one sentence with numbers.
And the real thing: a 50280 x 768 f32 embedding (mamba-130m's, 154 MB) under lavapipe's own
128 MiB limit loads, and its logits and greedy tokens equal the float64 numpy reference."""
import json
import struct

import numpy as np
import pytest

from py_engine.gpu.errors import DeviceLimitError
from py_engine.gpu.row_chunks import row_blocks
from py_engine.io import gpu_layout, hf_names
from py_engine.models.config import MambaConfig
from tests.native_support import engine, native as pytestmark  # noqa: F401

CAP = 64 * 1024
V, D = 2400, 32
BLOCKS = [(0, 512), (512, 1024), (1024, 1536), (1536, 2048), (2048, 2400)]
IDS = [5, 900, 2399, 64, 63, 1700]          # first / last rows of blocks, the last id
MIB = 2 ** 20


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    out = {}
    for tied in (True, False):
        cfg = make_config("nano", family="mamba1", hidden_size=D, num_hidden_layers=2,
                          vocab_size=V, tie_word_embeddings=tied)
        folder = tmp_path_factory.mktemp(f"wide-vocab-{'tied' if tied else 'untied'}")
        convert_host.write_hf(folder, cfg, init_weights(cfg, 0), "F32")
        out[tied] = folder
        if not tied:                  # bf16 on disk: each block widened on the GPU on its own
            folder = tmp_path_factory.mktemp("wide-vocab-untied-bf16")
            convert_host.write_hf(folder, cfg, init_weights(cfg, 0), "BF16")
            out["bf16"] = folder
    return out


# --- the plan: which pieces split, what is refused (host only) ---------------------------------

def _cfg(model_type, d, vocab, tied, n=16):
    return MambaConfig.from_hf_dict(dict(
        model_type=model_type, hidden_size=d, intermediate_size=2 * d, state_size=n,
        num_hidden_layers=1, vocab_size=vocab, tie_word_embeddings=tied,
        time_step_rank=-(-d // 16), conv_kernel=4))


def test_real_model_shapes_split_only_the_vocabulary_tables():
    """mamba-130m / 1.4b / 2.8b and Falcon-Mamba-7b against 128 and 256 MiB bindings: only
    the embedding and LM head split, every block within the limit and 64-row aligned; every
    other piece fits (Falcon-7b's in_proj halves are exactly 128 MiB); below that, the refusal
    names the piece and the numbers."""
    cases = {"mamba-130m": (_cfg("mamba", 768, 50280, True), {128: 2, 256: 0}),
             "mamba-1.4b": (_cfg("mamba", 2048, 50280, True), {128: 4, 256: 2}),
             "mamba-2.8b": (_cfg("mamba", 2560, 50280, True), {128: 4, 256: 2}),
             "falcon-mamba-7b": (_cfg("falcon_mamba", 4096, 65024, False), {128: 8, 256: 4})}
    for name, (cfg, want) in cases.items():
        shapes = hf_names.expected_tensors(cfg)
        for mib, n in want.items():
            plan = gpu_layout.plan_blocks(cfg, shapes, mib * MIB)
            split = {"backbone.embeddings.weight"} | (set() if cfg.tie_word_embeddings
                                                      else {"lm_head.weight"})
            assert set(plan) == (split if n else set()), (name, mib)
            for blocks in plan.values():
                assert len(blocks) == n, (name, mib)
                assert blocks[0][0] == 0 and blocks[-1][1] == cfg.vocab_size
                assert all(a % 64 == 0 and (b - a) * cfg.hidden_size * 4 <= mib * MIB
                           for a, b in blocks)
    falcon = cases["falcon-mamba-7b"][0]
    with pytest.raises(DeviceLimitError) as e:
        gpu_layout.plan_blocks(falcon, hf_names.expected_tensors(falcon), 64 * MIB)
    assert str(e.value) == (
        "backbone.layers.0.mixer.in_proj.weight#x [8192, 4096] takes 128.0 MiB as f32, more "
        "than this GPU binds at once (64.0 MiB), and only the embedding and LM head are split "
        "into row blocks: choose a smaller model or a GPU with larger limits")
    wide = _cfg("mamba", 8192, 50280, True)          # one row: 32 KiB
    with pytest.raises(DeviceLimitError) as e:
        gpu_layout.plan_blocks(wide, hf_names.expected_tensors(wide), 16 * 1024)
    assert str(e.value) == (
        "backbone.embeddings.weight [50280, 8192] cannot be split to fit this GPU: one row "
        "takes 32768 bytes as f32, more than this GPU binds at once (16384 bytes): choose a "
        "model with a smaller d_model or a GPU with larger limits")


def test_row_blocks_are_balanced_and_aligned():
    assert row_blocks(2400, 128, CAP) == BLOCKS
    assert row_blocks(512, 128, CAP) is None               # exactly the limit: whole
    assert row_blocks(513, 128, CAP) == [(0, 320), (320, 513)]
    assert row_blocks(100, 4096, 4095) == []                # not even one row fits
    # fewer than 64 rows fit: unaligned blocks (the ops copy logit columns then)
    assert row_blocks(100, 4096, 40 * 4096) == [(0, 34), (34, 68), (68, 100)]
    blocks = row_blocks(50280, 768 * 4, 128 * MIB)
    assert blocks == [(0, 25152), (25152, 50280)]


# --- a split model computes what the whole one computes ----------------------------------------

RUN = """
import os
from py_engine.io.hf_loader import load_model_local
from py_engine.io.weight_formats import format_summary
from py_engine.models.generate import Generator, SamplingConfig
device.binding_cap = args['cap']
try:
    plans = []
    m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
    def blocks(t):
        return [[a, b] for a, b, _ in t.parts] if hasattr(t, 'parts') else None
    out = {'embed': blocks(m.embed), 'head': blocks(m.lm_head), 'dtype': m.lm_head.dtype,
           'tied': m.lm_head is m.embed, 'gpu_bytes': format_summary(m.weights)['gpu_bytes']}
    out['full'] = await m.logits(args['ids'])
    st = m.new_state()
    out['steps'] = await m.step_logits(args['ids'], st)
    st.release()
    device.force_matvec = True          # the decode kernels of a real GPU (norm folded in)
    try:
        st = m.new_state()
        out['matvec'] = await m.step_logits(args['ids'], st)
        st.release()
    finally:
        device.force_matvec = False
    gen = Generator(m, SamplingConfig(greedy=True), max_tokens=64, group=8, ramp=())
    s0 = device.submits
    os.environ['MAMBAWEB_BATCH_STREAM'] = '0'       # the prefill in one submit (counted below)
    try:
        out['tokens'] = [t async for t in gen.stream(args['ids'], 17)]
    finally:
        del os.environ['MAMBAWEB_BATCH_STREAM']
    out['submits'] = device.submits - s0
    out['dpt'] = gen.dispatches_per_token
    gen.release()
    m.release()
finally:
    device.binding_cap = None
result = out
"""


@pytest.mark.parametrize("fmt", ["f32", "f16", "bf16", "q8", "q4"])
@pytest.mark.parametrize("tied", [True, False])
def test_split_model_equals_the_whole_one(engine, folders, tied, fmt):
    whole = engine.run(RUN, folder=str(folders[tied]), fmt=fmt, ids=IDS, cap=None)
    split = engine.run(RUN, folder=str(folders[tied]), fmt=fmt, ids=IDS, cap=CAP)
    assert whole["embed"] is None and whole["head"] is None
    assert split["embed"] == [list(b) for b in BLOCKS] == split["head"]
    assert split["tied"] == tied and split["dtype"] == fmt == whole["dtype"]
    for path in ("full", "steps", "matvec"):
        a = np.frombuffer(whole[path], np.float32)
        b = np.frombuffer(split[path], np.float32)
        assert a.size == len(IDS) * V and np.abs(a).max() > 0.05
        # each block runs the whole table's kernel (same threads per row): bit for bit
        assert np.array_equal(a, b), (path, np.abs(a - b).max())
    assert split["tokens"] == whole["tokens"] and len(set(whole["tokens"])) > 3
    # the recorded step replays as before: one submit per group of 8 (and the prefill's)
    assert split["submits"] == whole["submits"] == 1 + 2
    # extra dispatches only for the split tables: one per extra block of the gather, and of
    # the LM head (a narrow head's GEMM path dequantizes each block: two per block here)
    per_head_block = 1 if fmt == "f32" else 2
    extra = (len(BLOCKS) - 1) * (1 + per_head_block)
    assert split["dpt"] == whole["dpt"] + extra
    # q8/q4 pad each block on its own: a few bytes more than the whole table
    assert 0 <= split["gpu_bytes"] - whole["gpu_bytes"] <= 2 * 16 * len(BLOCKS)


LOAD = """
from py_engine.io.hf_loader import load_model_local
device.binding_cap = args['cap']
try:
    m = await load_model_local(device, args['folder'])
    result = {'weights': {n: await t.to_bytes() for n, t in m.weights.items()},
              'split': sorted(n for n, t in m.weights.items() if hasattr(t, 'parts')),
              'logits': await m.logits(args['ids'])}
    m.release()
finally:
    device.binding_cap = None
"""


def test_a_bf16_checkpoint_loads_into_blocks(engine, folders):
    whole = engine.run(LOAD, folder=str(folders["bf16"]), ids=IDS, cap=None)
    split = engine.run(LOAD, folder=str(folders["bf16"]), ids=IDS, cap=CAP)
    assert whole["split"] == [] and split["split"] == ["backbone.embeddings.weight",
                                                       "lm_head.weight"]
    assert split["weights"] == whole["weights"] and split["logits"] == whole["logits"]


TRAIN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.mamba import MambaModel
from py_engine.train.trainer import Trainer, join_blocks
from py_engine.train import checkpoint as ckpt
device.binding_cap = args['cap']
try:
    m = await load_model_local(device, args['folder'])
    tr = Trainer(m, lr=1e-2, weight_decay=0.1)
    initial = {n: await t.to_bytes() for n, t in m.weights.items()}
    ids = args['ids']
    grads, loss = await tr.gradients(ids, ids, 1, len(ids))
    steps = [(await tr.train_step([(ids, ids)], 1, len(ids)))['loss'] for _ in range(2)]
    weights = {n: await t.to_bytes() for n, t in m.weights.items()}
    moments = join_blocks({n: await t.to_bytes() for n, t in tr.opt.m.items()}, tr.blocks)
    state = await ckpt.parts_bytes(ckpt.state_parts(tr, {'step': 2}))
    hf = await ckpt.parts_bytes(ckpt.model_safetensors_parts(m))
    # a saved state restores under the same split: weights as row blocks, moments by rows
    sf = await ckpt.StateFile.from_bytes(state)
    m2 = MambaModel(device, m.cfg, await sf.load_weights(device, m.cfg))
    tr2 = Trainer(m2)
    await sf.load_moments(device, tr2.opt)
    restored = {'split': repr(m2.embed),
                'weights': {n: await t.to_bytes() for n, t in m2.weights.items()},
                'moments': join_blocks({n: await t.to_bytes() for n, t in tr2.opt.m.items()},
                                       tr2.blocks)}
    params = sorted(tr.params)
    for x in (tr, tr2):
        x.release()
    for x in (m, m2):
        x.release()
finally:
    device.binding_cap = None
result = {'grads': grads, 'loss': loss, 'steps': steps, 'weights': weights, 'moments': moments,
          'initial': initial,
          'state': state, 'hf': hf, 'restored': restored, 'params': params}
"""


def _close(a, b, what, rel=2e-5):
    a, b = (np.frombuffer(x, np.float32) for x in (a, b))
    assert a.shape == b.shape, what
    scale = max(np.abs(a).max(), 1e-30)
    assert np.abs(a - b).max() <= rel * scale, (what, np.abs(a - b).max(), scale)


def _header(data):
    (n,) = struct.unpack_from("<Q", data)
    return json.loads(data[8:8 + n])


@pytest.mark.parametrize("tied", [True, False])
def test_split_model_trains_like_the_whole_one(engine, folders, tied):
    whole = engine.run(TRAIN, folder=str(folders[tied]), ids=IDS, cap=None)
    split = engine.run(TRAIN, folder=str(folders[tied]), ids=IDS, cap=CAP)
    # every block is a parameter of its own; a tied head shares the embedding's blocks
    blocks = [p for p in split["params"] if "#rows" in p]
    assert len(blocks) == len(BLOCKS) * (1 if tied else 2)
    assert set(split["grads"]) == set(whole["grads"])          # joined back by piece
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    for name in whole["grads"]:
        # the head's input gradient sums over the blocks' vocabulary slices, then adds them:
        # the same terms in another order (float32 rounding)
        _close(whole["grads"][name], split["grads"][name], name)
    assert split["steps"] == pytest.approx(whole["steps"], rel=1e-5)
    assert whole["initial"] == split["initial"]
    for name in whole["weights"]:
        a, b, w0 = (np.frombuffer(x, np.float32) for x in
                    (whole["weights"][name], split["weights"][name], whole["initial"][name]))
        # AdamW divides by sqrt(v): a rounding-level gradient difference of a near-zero
        # gradient can move its update visibly, but far below one step (lr = 1e-2)
        assert np.abs(a - b).max() <= 1e-4, (name, np.abs(a - b).max())
        assert np.abs(a - w0).max() > 1e-3, name          # two steps moved every weight
        _close(whole["moments"][name], split["moments"][name], name)
    # the state file and the HF export store split pieces whole (independent of the GPU)
    head = _header(split["state"])
    assert not any("#rows" in k for k in head)
    assert head["optimizer.exp_avg/backbone.embeddings.weight"]["shape"] == [V, D]
    assert set(_header(whole["state"])) == set(head)
    emb = head["backbone.embeddings.weight"]["data_offsets"]
    hs = 8 + struct.unpack_from("<Q", split["state"])[0]
    assert split["state"][hs + emb[0]:hs + emb[1]] == split["weights"]["backbone.embeddings.weight"]
    hfh = _header(split["hf"])
    off = hfh["backbone.embeddings.weight"]["data_offsets"]
    hs = 8 + struct.unpack_from("<Q", split["hf"])[0]
    assert split["hf"][hs + off[0]:hs + off[1]] == split["weights"]["backbone.embeddings.weight"]
    r = split["restored"]
    assert r["split"].startswith("RowChunks([2400, 32], f32, [(0, 512),")
    assert r["weights"] == split["weights"] and r["moments"] == split["moments"]


# --- refusals: before any weight byte, with numbers --------------------------------------------

REFUSE = """
from py_engine.io.byte_sources import LocalSource
from py_engine.io.hf_loader import load_from_source, load_model_local

class Counting(LocalSource):
    reads = 0
    async def read_to_buffers(self, *a, **kw):
        Counting.reads += 1
        return await super().read_to_buffers(*a, **kw)

out = {}
before = (device.pool.stats()['in_use'], device.live_buffers)
device.binding_cap = args['cap']
try:
    try:
        await load_from_source(device, Counting(args['folder']))
        out['load'] = None
    except Exception as e:
        out['load'] = f'{type(e).__name__}: {e}'
    out['reads'] = Counting.reads
    device.binding_cap = None
    saved = dict(device.limits)
    device.limits['maxBufferSize'] = 8000          # pooled buffers: 6144 bytes at most
    try:
        await load_from_source(device, Counting(args['folder']))
        out['maxbuf'] = None
    except Exception as e:
        out['maxbuf'] = f'{type(e).__name__}: {e}'
    finally:
        device.limits.clear(); device.limits.update(saved)
    out['reads'] = Counting.reads
    out['leak'] = [device.pool.stats()['in_use'] - before[0], device.live_buffers - before[1]]
    device.binding_cap = args['logits_cap']
    m = await load_model_local(device, args['folder'])
    in_use = device.pool.stats()['in_use']
    try:
        await m.logits(list(range(args['tokens'])))
        out['logits'] = None
    except Exception as e:
        out['logits'] = f'{type(e).__name__}: {e}'
    out['logits_leak'] = device.pool.stats()['in_use'] - in_use - 1   # the ids tensor
    m.release()
finally:
    device.binding_cap = None
result = out
"""


def test_what_cannot_fit_is_refused_up_front(engine, folders):
    out = engine.run(REFUSE, folder=str(folders[True]), cap=6000, logits_cap=CAP, tokens=7)
    # in_proj's x half, [64, 32] f32 = 8192 bytes: a layer matrix, not a vocabulary table
    assert out["load"] == (
        "DeviceLimitError: backbone.layers.0.mixer.in_proj.weight#x [64, 32] takes 8192 bytes "
        "as f32, more than this GPU binds at once (6000 bytes), and only the embedding and LM "
        "head are split into row blocks: choose a smaller model or a GPU with larger limits")
    # maxBufferSize the tighter limit: the refusal names it
    assert out["maxbuf"] == (
        "DeviceLimitError: backbone.layers.0.mixer.in_proj.weight#x [64, 32] takes 8192 bytes "
        "as f32, more than this GPU's maxBufferSize allows (6144 bytes), and only the embedding "
        "and LM head are split into row blocks: choose a smaller model or a GPU with larger "
        "limits")
    assert out["reads"] == 0 and out["leak"] == [0, 0]
    # logits [7, 2400] f32 = 67200 bytes > 64 KiB: refused before anything is recorded
    assert out["logits"] == (
        "DeviceLimitError: the logits of 7 tokens x 2400 vocabulary take 67200 bytes, more "
        "than this GPU binds at once (65536 bytes): run at most 6 tokens per pass (a shorter "
        "sequence or a smaller batch)")
    assert out["logits_leak"] == 0


# --- the real thing: mamba-130m's embedding under lavapipe's own limit -------------------------

BIG = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
m = await load_model_local(device, args['folder'])
out = {'limit': device.max_binding, 'embed': [[a, b] for a, b, _ in m.embed.parts],
       'tied': m.lm_head is m.embed}
out['full'] = await m.logits(args['ids'])
st = m.new_state()
out['steps'] = await m.step_logits(args['ids'], st)
st.release()
gen = Generator(m, SamplingConfig(greedy=True), max_tokens=32)
out['tokens'] = [t async for t in gen.stream(args['ids'], 4)]
gen.release()
m.release()
result = out
"""


@pytest.mark.slow
def test_mamba130m_embedding_loads_under_the_real_128mib_limit(engine, tmp_path):
    """A 1-layer model with mamba-130m's vocabulary table (50280 x 768 f32 = 154 MB, tied LM
    head): lavapipe binds 128 MiB, so the table loads as two row blocks and the logits (GEMM
    prefill, step decode) and greedy tokens equal the float64 numpy reference."""
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    from tests.reference import mamba1_model_numpy as R
    if engine.device.limits["maxStorageBufferBindingSize"] >= 154_429_440:
        pytest.skip("this adapter binds the whole table: nothing to split")
    cfg = make_config("nano", family="mamba1", hidden_size=768, num_hidden_layers=1,
                      vocab_size=50280, tie_word_embeddings=True)
    small = make_config("nano", family="mamba1", hidden_size=768, num_hidden_layers=1,
                        vocab_size=64, tie_word_embeddings=True)
    w = init_weights(small, 0)           # the layer's weights; a random table (fast)
    rng = np.random.default_rng(0)
    w["backbone.embeddings.weight"] = (0.1 * rng.standard_normal((50280, 768))).astype(np.float32)
    convert_host.write_hf(tmp_path, cfg, w, "F32")
    ids = [0, 25151, 25152, 50279]          # both sides of the block boundary
    out = engine.run(BIG, folder=str(tmp_path), ids=ids)
    assert out["embed"] == [[0, 25152], [25152, 50280]] and out["tied"]
    rcfg, params = R.load_model(tmp_path)
    ref, _ = R.forward(params, rcfg, np.array(ids))
    for path in ("full", "steps"):
        got = np.frombuffer(out[path], np.float32).reshape(len(ids), 50280)
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), path
    assert out["tokens"] == R.generate_greedy(params, rcfg, ids, 4)[0].tolist()


# --- the ops on blocks that are not 64-row aligned (when fewer than 64 rows fit) ---------------

OPS = """
from py_engine.gpu.row_chunks import RowChunks
from py_engine.gpu.tensor import Tensor
from py_engine.ops import row_chunks as RC
from py_engine.ops.embedding import embedding_backward, embedding_forward
from py_engine.ops.linear import linear_backward_input, linear_forward
from py_engine.ops.weight_format import quantize
V, K, M = args['V'], args['K'], args['M']
w = args['w']
W = Tensor.from_bytes(device, (V, K), w)
S = RowChunks(device, (V, K), [(a, b, Tensor.from_bytes(device, (b - a, K), w[4 * a * K:4 * b * K]))
                              for a, b in args['blocks']], 'table')
x = Tensor.from_bytes(device, (M, K), args['x'])
dy = Tensor.from_bytes(device, (M, V), args['dy'])
ids = Tensor.from_list(device, (len(args['ids']),), args['ids'], 'u32')
out = {}
b = device.batch()
for fmt in ('f32', 'q4'):
    Wf, Sf = (W, S) if fmt == 'f32' else (quantize(b, W, fmt), S.map(lambda t: quantize(b, t, fmt)))
    for forced in (False, True):
        device.force_matvec = forced
        try:
            out[f'y/{fmt}/{forced}'] = [linear_forward(b, x, Wf), linear_forward(b, x, Sf)]
        finally:
            device.force_matvec = False
    out[f'e/{fmt}'] = [embedding_forward(b, ids, Wf), embedding_forward(b, ids, Sf)]
    out[f'dx/{fmt}'] = [linear_backward_input(b, dy, Wf), linear_backward_input(b, dy, Sf)]
dws = []
for a, c, _ in S.parts:
    dws.append(RC.backward_weight(b, dy, x, a, c, Tensor(device, (c - a, K)), M))
des = []
for a, c, part in S.parts:
    g = Tensor(device, (c - a, K))
    from py_engine.ops.elementwise import fill
    fill(b, g, 0.0)
    des.append(embedding_backward(b, ids, Tensor.from_bytes(device, (len(args['ids']), K), args['ge']), g, row0=a))
b.submit()
try:
    S.binding
    refused = None
except Exception as e:
    refused = f'{type(e).__name__}: {e}'
result = {k: [await t.to_bytes() for t in v] for k, v in out.items()}
result['refused'] = refused
result['dw'] = b''.join([await t.to_bytes() for t in dws])
result['de'] = b''.join([await t.to_bytes() for t in des])
"""


@pytest.mark.parametrize("M", [1, 3])
def test_unaligned_blocks_compute_the_whole_products(engine, M):
    """Blocks of 37 / 63 / 30 rows (the shape a huge d_model gets: fewer than 64 rows per
    binding): logit columns go through a copy instead of an offset binding; every product, the
    gather and both gradients equal the whole table's (f32: also float64 numpy; q4: the whole
    q4 table's, bit for bit)."""
    rng = np.random.default_rng(M)
    V_, K = 130, 32
    blocks = [(0, 37), (37, 100), (100, 130)]
    w = rng.standard_normal((V_, K)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    dy = rng.standard_normal((M, V_)).astype(np.float32)
    ids = [0, 36, 37, 99, 100, 129, 37, 5]
    ge = rng.standard_normal((len(ids), K)).astype(np.float32)
    out = engine.run(OPS, V=V_, K=K, M=M, w=w.tobytes(), x=x.tobytes(), dy=dy.tobytes(),
                     ids=ids, ge=ge.tobytes(), blocks=blocks)
    f = lambda b: np.frombuffer(b, np.float32)      # noqa: E731
    w64, x64, dy64 = w.astype(np.float64), x.astype(np.float64), dy.astype(np.float64)
    # an op that reads tables whole gets one sentence, not a WebGPU validation error
    assert out.pop("refused") == (
        "DeviceLimitError: table [130, 32] is held as 3 row blocks (it is larger than this "
        f"GPU's {engine.device.max_binding / 2**20:.1f} MiB storage binding limit) and this "
        "operation reads tensors whole: only the embedding gather and the LM head read split "
        "tensors")
    for key, (whole, split) in ((k, v) for k, v in out.items() if isinstance(v, list)):
        assert np.array_equal(f(whole), f(split)) or key.startswith("dx"), key
        np.testing.assert_allclose(f(split), f(whole), rtol=1e-5, atol=1e-5, err_msg=key)
    for forced in (False, True):
        np.testing.assert_allclose(f(out[f"y/f32/{forced}"][1]).reshape(M, V_), x64 @ w64.T,
                                   rtol=1e-5, atol=1e-5)
    assert np.array_equal(f(out["e/f32"][1]).reshape(len(ids), K), w[ids])
    np.testing.assert_allclose(f(out["dx/f32"][1]).reshape(M, K), dy64 @ w64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f(out["dw"]).reshape(V_, K), dy64.T @ x64, rtol=1e-5, atol=1e-5)
    de = np.zeros((V_, K))
    np.add.at(de, ids, ge.astype(np.float64))
    np.testing.assert_allclose(f(out["de"]).reshape(V_, K), de, rtol=1e-6, atol=1e-6)


PLAN = """
from py_engine.io.byte_sources import LocalSource
from py_engine.io.hf_loader import load_from_source
from py_engine.io.weight_formats import format_summary
device.binding_cap = args['cap']
out = {}
try:
    for fmt in args['formats']:
        seen = []
        cfg, w = await load_from_source(device, LocalSource(args['folder']), weights_format=fmt,
                                        on_plan=seen.append)
        out[fmt] = [seen[0]['gpu_bytes_by_format'][fmt], format_summary(w)['gpu_bytes']]
        device.release_tensors(w.values())
finally:
    device.binding_cap = None
result = out
"""


def test_the_plan_counts_the_blocks_bytes(engine, folders):
    """What the format selector shows before loading equals what the split model holds (q8/q4
    pad each block on its own)."""
    out = engine.run(PLAN, folder=str(folders[False]), cap=CAP,
                     formats=["f32", "f16", "bf16", "q8", "q4"])
    for fmt, (planned, loaded) in out.items():
        assert planned == loaded, fmt
