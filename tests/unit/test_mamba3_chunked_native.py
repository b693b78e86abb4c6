"""The Mamba-3 chunked-scan checks of tests/browser/test_kernels_mamba3.py (chunked == serial ==
the float64 reference) on the native backend (wgpu-py, the same WGSL). Skips, saying why, only
without any Vulkan/Metal/D3D12 adapter."""

from contextlib import contextmanager

import numpy as np
import pytest

from tests.browser import test_kernels_mamba3 as K

from tests.native_support import engine, entries_run, native as pytestmark  # noqa: E402,F401


test_mamba3_chunked_equals_serial = K.test_mamba3_chunked_equals_serial
test_mamba3_mimo_chunked_equals_serial = K.test_mamba3_mimo_chunked_equals_serial


@pytest.fixture
def chunk16(engine):
    engine.device.mamba3_chunk = 16
    yield engine
    engine.device.mamba3_chunk = None


def test_mamba3_longer_chunks_where_the_workgroup_memory_holds_them(chunk16):
    """A chunk longer than WebGPU's default 16 KiB holds, where the device's workgroup memory
    holds it (ops/mamba3.forward_chunk_len, MAMBAWEB_MAMBA3_CHUNK: an H200 holds L 32 at d_state
    128, where 16 KiB holds L 8): L 16 on the real head here (lavapipe offers 32 KiB), three
    chunks and a short one."""
    assert K.check_chunked(chunk16, 1, 53, 2, 64, 1, 128, 0.5, True) == 16


def test_mamba3_chunk_that_does_not_fit_is_refused(engine):
    """MAMBAWEB_MAMBA3_CHUNK / device.mamba3_chunk past the device's workgroup memory: refused
    in one sentence naming the setting, the bytes needed and the device's."""
    engine.device.mamba3_chunk = 32
    try:
        r = engine.run("""
import py_engine.ops.mamba3 as m3
try:
    m3.forward_chunk_len(device, 128, 32)
    result = None
except ValueError as e:
    result = str(e)
""")
    finally:
        engine.device.mamba3_chunk = None
    assert r is not None and "MAMBAWEB_MAMBA3_CHUNK=32" in r and "42368 bytes" in r, r
    assert "32768" in r and "choose a shorter chunk" in r


@pytest.fixture
def small_windows(engine):
    """Token windows of a chunk or two for the chunks-side-by-side path (path "parallel"):
    mamba3_phi's cost a token set high, as if lavapipe's loop limit bit after two chunks."""
    old = engine.run("import py_engine.ops.mamba3 as m3\nresult = m3.PHI_PASSES_PER_TOKEN\n"
                     "m3.PHI_PASSES_PER_TOKEN = 2000")
    yield engine
    engine.run(f"import py_engine.ops.mamba3 as m3\nm3.PHI_PASSES_PER_TOKEN = {old}")


def test_mamba3_chunks_side_by_side_over_several_windows(small_windows):
    """The states carry from window to window (the angle and ssm states in place, k and v
    through the copies): SISO at L 32 (two windows of one chunk) and the real head at L 8 (two
    chunks a window), MIMO at rank 2, against the serial scan and the float64 reference."""
    K.check_chunked(small_windows, 2, 37, 2, 5, 2, 12, 1.0, True)
    K.check_chunked(small_windows, 1, 21, 2, 64, 1, 128, 0.5, False)
    K.test_mamba3_mimo_chunked_equals_serial(small_windows, 2, 37, 2, 5, 2, 12, 2, 1.0, True)


@contextmanager
def walked_in_segments(engine):
    """The segmented walk turned on, and after the block, proof from the entry points the
    batches ran that it ran -- not the serial walk a missed setting would fall back to."""
    engine.device.mamba3_phi_segments = True
    try:
        with entries_run(engine) as seen:
            yield engine
    finally:
        engine.device.mamba3_phi_segments = None
    assert "mamba3_phi_segments" in seen and "mamba3_phi" not in seen, seen


@pytest.fixture
def phi_segments(engine):
    with walked_in_segments(engine):
        yield engine


def test_angles_walked_in_segments_side_by_side(phi_segments):
    """mamba3_phi_segments (ops/mamba3.phi_segments): each (sequence, head, angle)'s tokens in
    32 segments walked side by side, then the carries: chunked == serial to 1e-5 (angles, every
    state, y) and both == float64 -- 37 tokens (segments of 2, the last ones empty), 300 (of 10:
    the eight-ahead loads and the tail), 10 angles in two workgroups of 8, the real head."""
    K.check_chunked(phi_segments, 2, 37, 2, 5, 2, 12, 1.0, True)
    K.check_chunked(phi_segments, 1, 300, 2, 5, 1, 20, 1.0, False)
    K.check_chunked(phi_segments, 1, 21, 2, 64, 1, 128, 0.5, False)
    K.test_mamba3_mimo_chunked_equals_serial(phi_segments, 2, 37, 2, 5, 2, 12, 2, 1.0, True)


def test_angles_in_segments_over_several_windows(small_windows):
    """The segments within each token window, the angle state carried between windows."""
    with walked_in_segments(small_windows):
        K.check_chunked(small_windows, 2, 37, 2, 5, 2, 12, 1.0, True)


def test_real_gpus_run_the_chunks_side_by_side(monkeypatch):
    """By rule the chunked forward runs a head's chunks side by side on a real GPU (9.5x the
    in-order walk's prefill at 1,024 tokens on an H200) from 128 tokens, and in order on a CPU
    adapter; the device attribute and MAMBAWEB_MAMBA3_PARALLEL override it."""
    from py_engine.ops import mamba3 as m3
    from tests.unit._rule_checks import check_real_gpu_rule
    check_real_gpu_rule(monkeypatch, m3.chunks_side_by_side, "mamba3_parallel",
                        "MAMBAWEB_MAMBA3_PARALLEL")


def test_side_by_side_rows_split_their_dims_where_the_tiles_hold_the_shares():
    """mamba3_chunked's delta and out kernels give each (state row, class of dims) a thread:
    4 classes where P x 4 fits the 256 threads and the out kernel's shares fit its k and q tiles
    (P NQ <= 2 N), fewer where not; none (the in-order chunk scan) past P 256 or 2 N."""
    from py_engine.ops import mamba3 as m3
    assert m3.side_by_side_nq(64, 128) == 4        # mamba3-187m's heads
    assert m3.side_by_side_nq(128, 128) == 2
    assert m3.side_by_side_nq(256, 128) == 1
    assert m3.side_by_side_nq(5, 12) == 4
    assert m3.side_by_side_nq(64, 16) == 0 and m3.side_by_side_nq(300, 256) == 0


PATH_CODE = """
import py_engine.ops.mamba3 as m3
from py_engine.gpu.tensor import Tensor
H, P, N, S = 2, 64, 128, 32
runs = []
saved = m3._forward_parallel
m3._forward_parallel = lambda *a, **k: (runs.append('parallel'), saved(*a, **k))[1]
try:
    device.mamba3_parallel = True
    b = device.batch()
    for T in args['Ts']:
        n0 = len(runs)
        t = lambda w: Tensor(device, (1, T, w))
        y, _ = m3.mamba3_forward(b, t(H * P), t(N), t(N), t(H), t(H), t(H), t(S),
                                 dt_bias=Tensor(device, (H,)), B_bias=Tensor(device, (H, N)),
                                 C_bias=Tensor(device, (H, N)), D=Tensor(device, (H,)),
                                 n_heads=H, n_groups=1, S=S, A_floor=1e-4)
        runs.append(len(runs) > n0)
    b.discard()
finally:
    m3._forward_parallel = saved
    device.mamba3_parallel = None
result = [r for r in runs if isinstance(r, bool)]
"""


def test_short_sequences_keep_the_in_order_walk(engine):
    """Where the chunks run side by side, sequences under SIDE_BY_SIDE_MIN_T (128) tokens still
    take the in-order chunk scan (at 64 tokens it was the faster on the H200)."""
    assert engine.run(PATH_CODE, Ts=[64, 127, 128, 300]) == [False, False, True, True]


@pytest.fixture
def small_binding(engine):
    """A 128 KiB binding limit (Device.binding_cap): the real head's chunk states take 64 KiB
    a chunk, so a token window holds two chunks (side_by_side_chunks)."""
    engine.device.binding_cap = 128 * 1024
    yield engine
    engine.device.binding_cap = None


def test_windows_keep_the_chunk_states_within_one_binding(small_binding):
    K.check_chunked(small_binding, 1, 21, 2, 64, 1, 128, 0.5, False)


MODEL_CODE = """
import py_engine.ops.mamba3 as m3
from py_engine.io.hf_loader import load_model_local
m = await load_model_local(device, args['folder'], weights_format='f32')
out = {}
saved = m3.SIDE_BY_SIDE_MIN_T
m3.SIDE_BY_SIDE_MIN_T = 16
try:
    for mode in ('inorder', 'side', 'tiles'):
        device.mamba3_parallel = mode != 'inorder'
        device.mamba3_tiles = mode == 'tiles'
        device.mamba3_chunk = 8 if mode == 'tiles' else None   # several tiled chunks
        out[mode] = await m.logits(args['ids'])            # no state: fresh, views of in_proj
        st = m.new_state()
        await m.logits(args['ids'][:20], st)               # then a state carried into a second
        out[mode + '_cont'] = await m.logits(args['ids'][20:], st)
        st.release()
finally:
    m3.SIDE_BY_SIDE_MIN_T = saved
    device.mamba3_parallel = device.mamba3_tiles = device.mamba3_chunk = None
m.release()
result = out
"""


@pytest.mark.parametrize("name", ["mamba3-g2-r10-untied-onorm", "mamba3-mimo-r2-g1-r05-tied"])
def test_model_logits_with_the_chunks_side_by_side(engine, name):
    """A whole model's prefill through the side-by-side path (the 128-token threshold lowered
    to 16), with the thread-per-row kernels and with the register-tiled ones (8-token chunks),
    equals the in-order chunk scan's to 1e-5 of the largest logit: in_proj's column views as
    inputs, a fresh sequence and one continued from a state."""
    import json
    from tests.conftest import REPO
    folder = REPO / "tests" / "fixtures" / "models" / name
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    ids = np.random.default_rng(5).integers(0, vocab, 45).tolist()
    r = engine.run(MODEL_CODE, folder=str(folder), ids=ids)
    for key in ("", "_cont"):
        a = np.frombuffer(r["inorder" + key], np.float32)
        assert np.abs(a).max() > 0.05
        for mode in ("side", "tiles"):
            b = np.frombuffer(r[mode + key], np.float32)
            assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), (mode, key)
