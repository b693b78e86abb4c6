"""The native backend (py_engine.gpu.native: wgpu-py, the same WGSL) on the host, no browser.

Runs where wgpu-py finds an adapter: a real GPU, or Mesa's CPU Vulkan driver lavapipe
(`make test` installs mesa-vulkan-drivers). It skips, saying why, only when there is no
Vulkan/Metal/D3D12 adapter at all.

The browser kernel and GPU-layer tests are collected here a second time against a native
`engine` (tools.native_engine.NativeEngine runs the same snippets in CPython + asyncio), so
every kernel is checked on both backends with the same tolerances; then a fixture model
loaded from local files (load_hf_model_local) must match transformers' logits.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

FIXTURES = REPO / "tests" / "fixtures" / "models"


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


# --- the browser's kernel and GPU-layer tests, against the native engine ----------------
# (imported names are collected by pytest in this module, with this module's `engine`)
from tests.browser import test_gpu_layer as _gl  # noqa: E402
from tests.browser import test_kernels_foundation as _kf  # noqa: E402
from tests.browser import test_kernels_mamba as _km  # noqa: E402
from tests.browser import test_kernels_activations as _kact  # noqa: E402
from tests.browser import test_kernels_attention as _katt  # noqa: E402
from tests.browser import test_kernels_gated_rmsnorm as _kgn  # noqa: E402
from tests.browser import test_kernels_mamba3 as _km3  # noqa: E402
from tests.browser import test_kernels_ssd as _kss  # noqa: E402
from tests.browser import test_kernels_ssd_backward as _kssb  # noqa: E402
from tests.browser import test_kernels_weight_format as _kwf  # noqa: E402

test_linear_forward_and_backward = _kf.test_linear_forward_and_backward
test_linear_accumulates_into_existing_gradient = _kf.test_linear_accumulates_into_existing_gradient
test_elementwise = _kf.test_elementwise
test_quantize_stores_the_reference_bytes = _kwf.test_quantize_stores_the_reference_bytes
test_decode_matvec_reads_the_narrow_weight = _kwf.test_decode_matvec_reads_the_narrow_weight
test_gemm_and_gather_dequantize = _kwf.test_gemm_and_gather_dequantize
test_rmsnorm = _kf.test_rmsnorm
test_embedding = _kf.test_embedding
test_cross_entropy = _kf.test_cross_entropy
test_sum_and_mean = _kf.test_sum_and_mean
test_conv1d_forward_state_step = _km.test_conv1d_forward_state_step
test_conv1d_backward = _km.test_conv1d_backward
test_selective_scan_forward_and_step = _km.test_selective_scan_forward_and_step
test_scan_and_conv_continue_from_prefill_state = _km.test_scan_and_conv_continue_from_prefill_state
test_selective_scan_backward = _km.test_selective_scan_backward
test_ssd_forward_step_reference = _kss.test_ssd_forward_step_reference
test_ssd_chunk_limit_and_shape_errors = _kss.test_ssd_chunk_limit_and_shape_errors
test_ssd_backward = _kssb.test_ssd_backward
test_mamba3_forward_step_reference = _km3.test_mamba3_forward_step_reference
test_mamba3_shape_errors = _km3.test_mamba3_shape_errors
# the hybrid layers' kernels through Naga/Vulkan too (the browser runs them through Dawn)
test_attention_prefill_reference = _katt.test_attention_prefill_reference
test_attention_cache_prefill_and_steps = _katt.test_attention_cache_prefill_and_steps
test_attention_cache_limits = _katt.test_attention_cache_limits
test_attention_backward_reference = _katt.test_attention_backward_reference
test_attention_prefill_tiled = _katt.test_attention_prefill_tiled
test_attention_tiled_geometry_and_choice = _katt.test_attention_tiled_geometry_and_choice
test_attention_cache_prefill_tiled = _katt.test_attention_cache_prefill_tiled
test_attention_backward_tiled = _katt.test_attention_backward_tiled
test_activations = _kact.test_activations
test_gated_rmsnorm = _kgn.test_gated_rmsnorm
test_wgsl_compile_error_names_shader_and_entry = _gl.test_wgsl_compile_error_names_shader_and_entry
test_misaligned_binding_offset_is_refused = _gl.test_misaligned_binding_offset_is_refused
test_too_large_binding_and_buffer_are_refused = _gl.test_too_large_binding_and_buffer_are_refused
test_validation_error_surfaces_on_read = _gl.test_validation_error_surfaces_on_read
test_batch_is_one_submit_and_steady_loop_allocates_nothing = \
    _gl.test_batch_is_one_submit_and_steady_loop_allocates_nothing


def test_the_cpu_adapter_runs_every_limit_gated_test(engine):
    """Some native tests skip on an adapter whose limits leave nothing to test (the conv step
    folded into in_proj needs 12 storage buffers a stage, Mamba-1's x_proj fold 14; the
    vocabulary table split needs a binding limit under mamba-130m's 154 MB table). On the CPU
    adapter CI runs (lavapipe) none may skip: a driver update that moved a limit fails here,
    by name, instead of those tests quietly no longer running."""
    a = engine.info["adapter"]
    if a["adapter_type"] != "CPU":
        pytest.skip("a hardware adapter: its limits are its own")
    assert a["limits"]["maxStorageBuffersPerShaderStage"] >= 14, a["limits"]
    assert a["limits"]["maxStorageBufferBindingSize"] < 154_429_440, a["limits"]


def test_native_device_requests_adapter_limits_and_subgroups(engine):
    import wgpu
    a = engine.info["adapter"]
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    lim = adapter.limits
    assert a["limits"]["maxStorageBufferBindingSize"] == lim["max-storage-buffer-binding-size"]
    assert a["limits"]["maxStorageBuffersPerShaderStage"] == lim["max-storage-buffers-per-shader-stage"] > 8
    assert a["limits"]["minStorageBufferOffsetAlignment"] == 256   # as strict as Chrome
    if {"subgroup", "subgroups"} & set(adapter.features):
        assert "subgroups" in a["features"]
    assert a["backend"] == "native"


def test_override_constants_reach_the_pipeline(engine):
    # sampling.wgsl's WG and selective_scan_forward.wgsl's NS are `override`s: two values, two pipelines
    out = engine.run("""
p1 = device.pipeline('selective_scan_forward', 'selective_scan_forward', {'NS': 8})
p2 = device.pipeline('selective_scan_forward', 'selective_scan_forward', {'NS': 16})
p3 = device.pipeline('selective_scan_forward', 'selective_scan_forward', {'NS': 8})
from py_engine.gpu.errors import ShaderError
try:
    device.pipeline('selective_scan_forward', 'selective_scan_forward', {'NO_SUCH_CONSTANT': 1})
    err = None
except ShaderError as e:
    err = str(e)
result = {'distinct': p1 is not p2, 'cached': p1 is p3, 'err': err}
""")
    assert out["distinct"] and out["cached"]
    assert out["err"] and "selective_scan_forward.wgsl" in out["err"] and "selective_scan_forward" in out["err"]


# --- loading from local files and the model --------------------------------------------
LOAD_AND_DUMP = """
from py_engine.io.hf_loader import load_hf_model_local
events = []
before = device.pool.stats()['in_use']
cfg, weights = await load_hf_model_local(device, args['folder'], progress=events.append)
result = {'tensors': {k: await t.to_bytes() for k, t in weights.items()},
          'progress': events[-1], 'in_use_delta': device.pool.stats()['in_use'] - before}
for t in weights.values():
    t.release()
"""


@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied-bf16", "mamba-d24-untied-f16"])
def test_local_loader_tensors_equal_checkpoint(engine, name):
    from py_engine.io import gpu_layout
    from py_engine.models.config import MambaConfig
    from tests.reference.mamba1_model_numpy import load_safetensors
    out = engine.run(LOAD_AND_DUMP, folder=str(FIXTURES / name))
    ref = load_safetensors(FIXTURES / name / "model.safetensors")
    cfg = MambaConfig.from_hf_dict(json.loads((FIXTURES / name / "config.json").read_text()))
    expect = {}
    for hf_name, arr in ref.items():
        for piece, r0, r1, shape in gpu_layout.pieces(cfg, hf_name, arr.shape):
            expect[piece] = arr.reshape(arr.shape[0], -1)[r0:r1].reshape(shape)
    assert set(out["tensors"]) == set(expect)
    for piece, ref_arr in expect.items():
        got = np.frombuffer(out["tensors"][piece], np.float32).reshape(ref_arr.shape)
        assert np.array_equal(got, ref_arr.astype(np.float32)), piece
    p = out["progress"]
    assert p["tensors"] == p["total_tensors"] == len(ref) and p["bytes"] == p["total_bytes"] > 0


def test_local_loader_missing_and_truncated_are_named_errors(engine, tmp_path):
    import shutil
    bad = """
from py_engine.io.hf_loader import load_hf_model_local
before = device.pool.stats()['in_use']
try:
    await load_hf_model_local(device, args['folder'])
    result = {'error': None}
except Exception as e:
    result = {'error': f'{type(e).__name__}: {e}'}
result['in_use_delta'] = device.pool.stats()['in_use'] - before
"""
    out = engine.run(bad, folder=str(tmp_path / "no-such-model"))
    assert "config.json" in out["error"] and "not found" in out["error"]
    d = tmp_path / "truncated"
    shutil.copytree(FIXTURES / "mamba-d40-tied", d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) - 100])
    out = engine.run(bad, folder=str(d))
    assert out["error"] and "model.safetensors" in out["error"] and out["in_use_delta"] == 0


MODEL_RUN = """
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
model = await load_model_local(device, args['folder'])
ids = [int(i) for i in args['ids']]
state = model.new_state()
fwd = await model.logits(ids, state)
state2 = model.new_state()
stp = await model.step_logits(ids, state2)
result = {'forward': fwd, 'step': stp, 'V': model.cfg.vocab_size}
for s in (state, state2):
    s.release()
model.release()
"""


@pytest.mark.parametrize("name", ["mamba-d24-untied-bf16", "falcon-d40-untied", "mamba-d40-tied-f16"])
def test_fixture_logits_match_transformers(engine, name):
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    out = engine.run(MODEL_RUN, folder=str(FIXTURES / name), ids=ids)
    V = out["V"]
    ref = exp["logits"].reshape(len(ids), V)
    for path in ("forward", "step"):
        got = np.frombuffer(out[path], np.float32).reshape(len(ids), V)
        assert np.abs(got - ref).max() <= 1e-4, (path, np.abs(got - ref).max())


def test_greedy_decode_runs_the_recorded_step(engine):
    out = engine.run("""
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model_local(device, args['folder'])
gen = Generator(model, SamplingConfig(greedy=True), max_tokens=64)
toks = [t async for t in gen.stream([1, 2, 3], 12)]
result = {'tokens': toks, 'dpt': gen.dispatches_per_token}
gen.release()
model.release()
""", folder=str(FIXTURES / "mamba-d24-untied"))
    assert len(out["tokens"]) == 12 and out["dpt"] > 0


def test_loader_imports_no_browser_modules():
    code = ("import sys; import py_engine.io.hf_loader, py_engine.io.byte_sources, "
            "py_engine.models.mamba, py_engine.gpu.native; "
            "bad = [m for m in ('js', 'pyodide') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("blocking", [False, True])
def test_both_wait_modes_read_and_finish(engine, blocking):
    """blocking_waits: finish() polls the device in this thread; off, it awaits wgpu-py's
    poll thread. Both must see every earlier submit."""
    saved = engine.device.blocking_waits
    engine.device.blocking_waits = blocking
    try:
        out = engine.run("""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
x = Tensor.from_list(device, (300,), [float(i) for i in range(300)])
y = Tensor(device, (300,))
b = device.batch()
for i in range(50):
    ew.fill(b, x, float(i))
    ew.add(b, x, x, out=y)
b.submit()
await device.finish()
result = (await y.to_list())[:3]
x.release()
y.release()
""")
    finally:
        engine.device.blocking_waits = saved
    assert out == [98.0, 98.0, 98.0]
