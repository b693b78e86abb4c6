"""The lanes variant of Mamba-1's sequence scan (shaders/selective_scan_lanes.wgsl; real GPUs pick
it for prefill) on the native backend (wgpu-py on lavapipe here), forced with
`device.force_scan_lanes`: against float64 numpy and the classic kernel at N 16 and N < 16, T not
a multiple of the chunk nor of the 16-token block, I not a multiple of the 8 channels of a
workgroup, Bsz 2, with and without z, D, dt_bias and an initial state, Falcon's B/C norms, one
chunk and several, the backward from its saved chunk states; then whole models (Mamba-1, Falcon)
with it: logits == transformers', forward == unrolled step from a random state. Also the kernel
choice (device flag, MAMBAWEB_SCAN) and the chunk target (MAMBAWEB_SCAN_THREADS). Skips, saying
why, only without any Vulkan/Metal/D3D12 adapter."""
import numpy as np
import pytest

import py_engine.ops.selective_scan as ss
from py_engine.ops.loop_budget import LOOP_PASS_BUDGET
from tests.browser import test_kernels_mamba as KM
from tests.browser.scan_lanes_cases import check_lanes
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIXTURES = REPO / "tests" / "fixtures" / "models"

CASES = [  # nb, T, I, N, chunk, gate, h0, D, dt_bias, norm eps
    (2, 37, 40, 16, 16, True, True, True, True, None),     # nc 3, last chunk 5 tokens
    (2, 37, 40, 16, None, True, True, True, True, None),   # default chunk (16 on lavapipe)
    (2, 45, 9, 4, 20, True, True, True, True, None),       # N 4, I 9, chunk = block + 4
    (1, 50, 24, 4, 50, False, False, False, False, None),  # nc 1: no z, D, dt_bias, h0
    (2, 1, 40, 16, None, True, True, True, True, None),    # one token
    (2, 37, 17, 16, 23, True, True, True, True, 1e-6),     # Falcon's B/C norms, nc 2
    (2, 29, 40, 4, 29, False, False, True, False, 1e-3),   # norms at N 4, nc 1, no h0
    (1, 600, 40, 16, None, True, True, True, True, None),  # chunk capped at max_chunk: 3 chunks
]


@pytest.mark.parametrize("nb,T,I,N,chunk,gate,with_h0,with_D,with_bias,eps", CASES)
def test_lanes_forward_equals_float64_and_classic(engine, nb, T, I, N, chunk, gate, with_h0,
                                                  with_D, with_bias, eps):
    check_lanes(engine, nb, T, I, N, chunk, gate=gate, with_h0=with_h0, with_D=with_D,
                with_bias=with_bias, eps=eps, seed=T + I + N)


def test_an_inference_walks_a_chunk_longer_than_the_classic_cap(engine):
    """No backward shares the chunks of an inference, so its lanes forward takes chunks up to
    lanes_max_chunk (1,888 tokens at N 16) instead of max_chunk (269): here 600 tokens in one
    chunk, one dispatch (on lavapipe 256 walks fill the device), within the loop-pass budget --
    equal to float64 and to the classic kernel's three chunks."""
    info = check_lanes(engine, 1, 600, 256, 16, None, seed=11)
    assert info["lanes_dispatches"] == 1 and info["classic_dispatches"] == 3, info


@pytest.mark.parametrize("nb,T,I,N,chunk,eps,with_h0", [(2, 37, 40, 16, 16, None, True),
                                                       (2, 41, 12, 4, 18, 1e-6, False)])
def test_backward_from_lanes_forward(engine, nb, T, I, N, chunk, eps, with_h0):
    """Training after a lanes forward: its ScanSaved (chunk states from the lanes F1 + the shared
    F2) feeds the unchanged backward; every gradient equals float64 and the classic path's."""
    check_lanes(engine, nb, T, I, N, chunk, with_h0=with_h0, eps=eps, backward=True, seed=9)


@pytest.fixture
def forced(engine):
    engine.device.force_scan_lanes = True
    yield engine
    engine.device.force_scan_lanes = None


@pytest.mark.parametrize("case", KM.SCAN_CASES)
def test_kernel_suite_forward_and_step_with_lanes(forced, case):
    """The Mamba-1 kernel suite's forward == float64 == unrolled decode steps, every case, with
    the lanes forward forced (tests/browser/test_kernels_mamba.py)."""
    KM.test_selective_scan_forward_and_step(forced, *case)


@pytest.mark.parametrize("case", KM.BWD_CASES)
def test_kernel_suite_backward_with_lanes(forced, case):
    """The suite's backward cases with the lanes forward: saved chunk states, and (save=False)
    the backward recomputing them with the lanes F1."""
    KM.test_selective_scan_backward(forced, *case)


def test_kernel_suite_prefill_then_decode_with_lanes(forced):
    KM.test_scan_and_conv_continue_from_prefill_state(forced)


def test_lanes_loop_passes_fit_lavapipes_budget():
    """Forced on lavapipe, one lanes invocation walks at most max_chunk(N) tokens (the chunk is
    shared with the backward) in well under the loop-pass budget (shaders/LOOP_BUDGET.md)."""
    for N in range(1, ss.MAXN + 1):
        assert ss.lanes_loop_passes(ss.max_chunk(N), N) <= LOOP_PASS_BUDGET // 4, N
    assert ss.lanes_loop_passes(16, 16) == 69 + 8   # the shader header's count per block
    for N in range(1, ss.MAXN + 1):                  # an inference's longer chunks too
        assert ss.lanes_loop_passes(ss.lanes_max_chunk(N), N) <= LOOP_PASS_BUDGET // 4, N


class _Dev:
    def __init__(self, fallback):
        self.info = {"is_fallback": fallback}


def test_kernel_choice_and_chunk_target(monkeypatch):
    monkeypatch.delenv("MAMBAWEB_SCAN", raising=False)
    monkeypatch.delenv("MAMBAWEB_SCAN_THREADS", raising=False)
    gpu, soft = _Dev(False), _Dev(True)
    assert ss.scan_kernel(gpu) == "lanes" and ss.scan_kernel(soft) == "classic"
    soft.force_scan_lanes = True
    gpu.force_scan_lanes = False
    assert ss.scan_kernel(soft) == "lanes" and ss.scan_kernel(gpu) == "classic"
    soft.force_scan_lanes = gpu.force_scan_lanes = None
    monkeypatch.setenv("MAMBAWEB_SCAN", "classic")
    assert ss.scan_kernel(gpu) == "classic"
    monkeypatch.setenv("MAMBAWEB_SCAN", "lanes")
    assert ss.scan_kernel(soft) == "lanes"
    monkeypatch.setenv("MAMBAWEB_SCAN", "fast")
    with pytest.raises(ValueError, match="MAMBAWEB_SCAN must be 'lanes' or 'classic'"):
        ss.scan_kernel(gpu)
    # chunk targets on a GPU: mamba-1.4b (I 4096) at 1024 tokens
    assert ss.default_chunk(gpu, 1, 1024, 4096, lanes=True) == 1024       # 4096 walks: 1 chunk
    assert ss.default_chunk(gpu, 1, 1024, 1536, lanes=True) == 342        # mamba-130m: 3 chunks
    assert ss.default_chunk(gpu, 1, 1024, 4096, lanes=False) == 64        # 65536: 16 chunks
    assert ss.default_chunk(soft, 1, 1024, 4096, lanes=True) == 1024        # one chunk
    assert ss.default_chunk(soft, 1, 1024, 4096, lanes=False) == ss.max_chunk(16)
    monkeypatch.setenv("MAMBAWEB_SCAN_THREADS", "8192")
    # the lanes forward of an inference walks longer chunks than the classic kernels' cap
    assert ss.default_chunk(gpu, 1, 1024, 4096, lanes=True) == 512                # nc 2
    assert ss.default_chunk(gpu, 1, 1024, 4096, lanes=False) == ss.max_chunk(16)   # capped
    monkeypatch.setenv("MAMBAWEB_SCAN_THREADS", "4096")
    assert ss.default_chunk(gpu, 1, 1024, 4096, lanes=True) == 1024               # one chunk
    assert ss.default_chunk(gpu, 1, 4096, 4096, lanes=True) == ss.lanes_max_chunk(16) == 1888
    monkeypatch.setenv("MAMBAWEB_SCAN_THREADS", "lots")
    with pytest.raises(ValueError, match="MAMBAWEB_SCAN_THREADS must be a positive whole number"):
        ss.default_chunk(gpu, 1, 1024, 4096, lanes=True)


MODEL_RUN = """
import random, struct
from py_engine.io.hf_loader import load_model_local
import py_engine.ops.selective_scan as ss
device.force_scan_lanes = True
model = await load_model_local(device, args['folder'])
ids = [int(i) for i in args['ids']]
state = model.new_state(max_tokens=len(ids) + 4)
fwd = await model.logits(ids, state)
# a random state, as if 7 tokens had been seen; a longer prompt; forward (lanes) vs step
rng = random.Random(5)
s1 = model.new_state()
vals = [rng.gauss(0.0, 1.0) for t in s1.tensors() for _ in range(t.numel)]
snap = await s1.to_bytes()
head = snap[:len(snap) - 4 * len(vals)].replace(b'"tokens_seen":0', b'"tokens_seen":7')
s1.load_bytes(head + struct.pack(f'<{len(vals)}f', *vals))
s2 = model.new_state()
s2.load_bytes(head + struct.pack(f'<{len(vals)}f', *vals))
long_ids = [(i * 37 + 11) % model.cfg.vocab_size for i in range(args['T'])]
rfwd = await model.logits(long_ids, s1)
rstp = await model.step_logits(long_ids, s2)
result = {'forward': fwd, 'rfwd': rfwd, 'rstp': rstp, 'V': model.cfg.vocab_size,
          'fwd_states': [await t.to_bytes() for t in s1.tensors()],
          'step_states': [await t.to_bytes() for t in s2.tensors()],
          'lanes_built': sorted(k[1] for k in device._pipelines if k[0] == 'selective_scan_lanes')}
device.force_scan_lanes = None
for s in (state, s1, s2):
    s.release()
model.release()
"""


@pytest.mark.parametrize("name", ["mamba-d24-untied", "falcon-d40-untied"])
def test_model_with_lanes_matches_transformers_and_step(engine, monkeypatch, name):
    """Whole models with the lanes scan forced, prompts cut into 5-token chunks (so F1 and the
    carry run too): the fixture prompt's logits equal transformers'; from a random state, a
    37-token forward equals the unrolled decode steps (logits and every final state)."""
    monkeypatch.setattr(ss, "default_chunk", lambda *a, **k: 5)
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    T = 37
    out = engine.run(MODEL_RUN, folder=str(FIXTURES / name), ids=ids, T=T)
    V = out["V"]
    assert {"selective_scan_forward_lanes", "selective_scan_forward_chunk_lanes"} <= \
        set(out["lanes_built"])
    fwd = np.frombuffer(out["forward"], np.float32).reshape(len(ids), V)
    ref = exp["logits"].reshape(len(ids), V)
    assert np.abs(fwd - ref).max() <= 1e-4, np.abs(fwd - ref).max()
    rfwd = np.frombuffer(out["rfwd"], np.float32).reshape(T, V)
    rstp = np.frombuffer(out["rstp"], np.float32).reshape(T, V)
    assert np.abs(rfwd - rstp).max() <= 1e-4 * max(1.0, np.abs(rstp).max())
    for a, b in zip(out["fwd_states"], out["step_states"]):
        a, b = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
