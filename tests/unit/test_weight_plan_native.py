"""What the generate page's weight-format selector shows before loading: the GPU bytes each
format would take (py_engine/io/weight_formats.gpu_bytes_by_format, from config.json and the
safetensors headers only) equal the bytes the loaded model's weights then occupy, on the native
backend (wgpu-py, the tab's WGSL), for each family and every format; and a format whose kernels
need a device feature the GPU lacks is refused by name before any weight is read."""
import pytest

from tests.conftest import REPO
from tools.native_engine import wgpu_adapter_problem

FIX = REPO / "tests" / "fixtures" / "models"
FORMATS = ["f32", "f16", "bf16", "q8", "q4"]
MODELS = ["mamba-d40-tied", "mamba2-g2-untied", "nemotronh-mamf-untied", "mamba3-g1-r05-tied",
          "bytes-tiny-stdlib"]
_problem = wgpu_adapter_problem()
native = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


PLAN_AND_LOAD = """
from py_engine.io.byte_sources import LocalSource
from py_engine.io.hf_loader import load_from_source, read_plan
from py_engine.io.weight_formats import format_summary, weights_format
_, _, plan = await read_plan(LocalSource(args['folder']))
out = {'plan': plan['gpu_bytes_by_format'], 'loaded': {}, 'format': {}}
for fmt in args['formats']:
    seen = []
    cfg, w = await load_from_source(device, LocalSource(args['folder']), weights_format=fmt,
                                    on_plan=seen.append)
    assert seen and seen[0]['gpu_bytes_by_format'] == out['plan']
    out['loaded'][fmt] = format_summary(w)['gpu_bytes']
    out['format'][fmt] = weights_format(w)
    for t in w.values():
        t.release()
result = out
"""


@native
@pytest.mark.parametrize("name", MODELS)
def test_planned_gpu_bytes_equal_the_loaded_ones(engine, name):
    r = engine.run(PLAN_AND_LOAD, folder=str(FIX / name), formats=FORMATS)
    assert r["plan"] == r["loaded"], name
    f32 = r["plan"]["f32"]
    assert r["plan"]["f16"] == r["plan"]["bf16"]
    for fmt in FORMATS[1:]:
        # a format no matrix fits (K not a multiple of its chunk: d_model 24, 36, 40 for q4)
        # keeps everything f32 and says so; one that fits some saves bytes
        if r["format"][fmt] == fmt:
            assert r["plan"][fmt] < f32, (name, fmt)
        else:
            assert r["format"][fmt] == "f32" and r["plan"][fmt] == f32, (name, fmt)
    if name == "bytes-tiny-stdlib":          # d_model 64: every matrix fits every format
        assert [r["format"][f] for f in FORMATS] == FORMATS
        assert r["plan"]["q4"] < r["plan"]["q8"] < r["plan"]["f16"] < f32

def test_plan_matches_the_checkpoint_bytes_for_f32():
    """Host-only: the f32 plan equals the checkpoint's used tensors widened to 4 bytes."""
    import numpy as np
    from safetensors import safe_open
    from py_engine.io.byte_sources import LocalSource
    from py_engine.io.hf_loader import read_plan
    folder = FIX / "mamba2-g2-untied"
    from tests.async_run import run
    _, _, plan = run(read_plan(LocalSource(folder)))
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    assert plan["gpu_bytes_by_format"]["f32"] == 4 * n
    assert plan["weight_files"] == ["model.safetensors"] and plan["file_dtypes"] == ["F32"]


def test_the_kernels_need_no_optional_feature():
    """f16/bf16 are unpacked from u32 words (unpack2x16float, core WGSL): no format needs
    shader-f16, which SwiftShader and Dawn on NVIDIA do not offer by default."""
    from py_engine.io.weight_formats import format_problem, needed_features
    for fmt in FORMATS:
        assert needed_features(fmt) == set(), fmt
        assert format_problem(fmt, set()) is None


def test_a_format_the_device_cannot_run_is_refused_by_name():
    """Were a format's kernel to `enable f16;`, a device without shader-f16 refuses it in one
    sentence naming the format, the feature and the formats that remain."""
    from py_engine.gpu.shaders import shader_source
    from py_engine.io.weight_formats import check_device_format, format_problem

    def read(name):
        src = shader_source(name)
        return "enable f16;\n" + src if name == "matvec_f16" else src

    assert format_problem("f16", {"subgroups"}, read) == (
        "f16 weights need the GPU feature 'shader-f16', which this GPU does not offer: choose "
        "f32 or bf16 or q8 or q4 instead")
    assert format_problem("f16", {"shader-f16"}, read) is None
    assert format_problem("q4", set(), read) is None

    class Device:
        features = {"subgroups"}
    check_device_format(Device(), "q4")
    with pytest.raises(ValueError, match="unknown weight format 'int3'"):
        check_device_format(Device(), "int3")
