"""The GPU layer in the browser: errors surface as Python exceptions with names, limits are
checked before WebGPU silently invalidates work, and steady workloads stop allocating."""
import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


def test_adapter_and_requested_limits(engine):
    a = engine.info["adapter"]
    # We ask for the adapter's maxima, not WebGPU's defaults (128 MiB, 8 storage buffers).
    assert a["limits"]["maxStorageBufferBindingSize"] > 128 * 2**20
    assert a["limits"]["maxStorageBuffersPerShaderStage"] > 8
    assert "subgroups" in a["features"]
    assert engine.info["python"].startswith("3.")


def test_wgsl_compile_error_names_shader_and_entry(engine):
    out = engine.run("""
from py_engine.gpu import shaders
from py_engine.gpu.errors import ShaderError
shaders._cache['broken_test'] = '''
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn broken_forward() { out[0] = undefined_name; }
'''
try:
    device.pipeline('broken_test', 'broken_forward')
    await device.check()
    result = 'no error'
except ShaderError as e:
    result = str(e)
""")
    assert "broken_test.wgsl" in out and "broken_forward" in out and "undefined_name" in out


def test_misaligned_binding_offset_is_refused(engine):
    out = engine.run("""
from py_engine.gpu.errors import GPUValidationError
buf = device.buffer(4096)
pipe = device.pipeline('elementwise_forward', 'fill_forward')
try:
    device.bind(pipe, [device.uniform(b'\\0' * 16), None, None, (buf, 4, 64)])
    result = 'accepted'
except GPUValidationError as e:
    result = str(e)
device.destroy(buf)
""")
    assert "multiple of 256" in out


def test_too_large_binding_and_buffer_are_refused(engine):
    out = engine.run("""
from py_engine.gpu.errors import DeviceLimitError
msgs = []
try:
    device.buffer(device.limits['maxBufferSize'] + 4, label='embedding')
except DeviceLimitError as e:
    msgs.append(str(e))
class Fake:  # a buffer object claiming a size beyond the binding limit; never reaches WebGPU
    id = -1; size = device.limits['maxStorageBufferBindingSize'] + 256
pipe = device.pipeline('elementwise_forward', 'fill_forward')
try:
    device.bind(pipe, [None, None, None, (Fake(), 0, Fake.size)])
except DeviceLimitError as e:
    msgs.append(str(e))
result = msgs
""")
    assert len(out) == 2
    assert "maxBufferSize" in out[0] and "embedding" in out[0]
    assert "maxStorageBufferBindingSize" in out[1] and "split" in out[1]


def test_validation_error_surfaces_on_read(engine):
    out = engine.run("""
small = device.buffer(256)
try:
    await device.read(small, 0, 1024)   # reading past the end: WebGPU validation error
    result = 'no error'
except Exception as e:
    result = type(e).__name__ + ': ' + str(e)
device.destroy(small)
""")
    # the engine's own error type, with the browser's or wgpu's words on the copy's size
    assert out.startswith("GPUValidationError: ") and "1024" in out, out


def test_batch_is_one_submit_and_steady_loop_allocates_nothing(engine):
    out = engine.run("""
import struct
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
x = Tensor.from_list(device, (1000,), [1.0] * 1000)
def step():
    b = device.batch()
    y = ew.silu(b, x)
    z = ew.add(b, y, x)
    for _ in range(8):
        z2 = ew.mul(b, z, x); z.release(); z = z2
    y.release()
    n = b.dispatch_count
    b.submit()
    return z, n
for _ in range(5):  # warm-up: pool and bind-group caches fill
    z, n = step(); z.release()
before = device.stats()
for i in range(1000):
    z, n = step()
    z.release()
await device.finish()
after = device.stats()
result = {'dispatches_per_batch': n, 'submits': after['submits'] - before['submits'],
          'dispatches': after['dispatches'] - before['dispatches'],
          'new_buffers': after['buffers_created'] - before['buffers_created'],
          'new_bind_groups': after['bind_groups'] - before['bind_groups'],
          'in_use': after['pool']['in_use'] - before['pool']['in_use']}
x.release()
""")
    assert out["dispatches_per_batch"] == 10
    assert out["submits"] == 1000 and out["dispatches"] == 10_000
    assert out["new_buffers"] == 0 and out["new_bind_groups"] == 0 and out["in_use"] == 0


def test_no_webgpu_says_what_to_do(browser, server):
    """Chromium started without --enable-unsafe-webgpu: the page explains, in plain words."""
    from playwright.sync_api import sync_playwright  # noqa: F401  (browser fixture owns pw)
    pw_browser = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=[a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + ["--disable-webgpu"])
    try:
        page = pw_browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.body.dataset.engine !== undefined", timeout=90_000)
        assert page.evaluate("document.body.dataset.engine") == "no-gpu"
        text = page.inner_text("#engine-status")
        assert "No WebGPU" in text
        assert "Chrome" in text and ("--enable-unsafe-webgpu" in text or "localhost" in text)
    finally:
        pw_browser.close()
