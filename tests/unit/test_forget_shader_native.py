"""Device.forget_shader (py_engine/gpu/device.py): the pipelines built from one shader file and
the native backend's compiled module of it are dropped, others kept, and the next pipeline() is
built from the source as it is then (what tools/ablate_ssd and tools/ablate_matvec_q4 need to
time an edited kernel: the sixth session's q4 ablations timed the unedited one, the module
kept). Native backend (lavapipe here)."""
from tests.native_support import engine, native as pytestmark  # noqa: F401

CODE = """
from py_engine.gpu import shaders as S
old = device.pipeline('bench_read', 'read_bandwidth')
other = device.pipeline('init', 'uniform_forward')
had = 'bench_read' in device._modules
src = S.shader_source('bench_read')
S._cache['bench_read'] = src + '\\n// edited\\n'
try:
    device.forget_shader('bench_read')
    gone = (not any(k[0] == 'bench_read' for k in device._pipelines)
            and 'bench_read' not in device._modules)
    kept = device.pipeline('init', 'uniform_forward') is other
    new = device.pipeline('bench_read', 'read_bandwidth')
    result = dict(had=had, gone=gone, kept=kept, rebuilt=new is not old,
                  compiled='bench_read' in device._modules)
finally:
    S._cache['bench_read'] = src
    device.forget_shader('bench_read')
"""


def test_forget_shader_drops_its_pipelines_and_module(engine):
    r = engine.run(CODE)
    assert r == dict(had=True, gone=True, kept=True, rebuilt=True, compiled=True), r
