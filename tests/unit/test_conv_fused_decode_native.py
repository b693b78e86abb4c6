"""Mamba-1 and Mamba-2 decode with the conv step folded into in_proj's mat-vec
(matvec_forward_conv in shaders/lib/matvec_rows.wgsl: one dispatch fewer per layer on real GPUs)
computes exactly what the separate in_proj + conv1d_step dispatches compute: step logits, the
conv and SSM states after the steps, and greedy tokens, bit for bit, for Mamba-1, Falcon-Mamba
and Mamba-2 (1 and 2 groups) fixtures, every weight format, one sequence and two at once; and
the fused prefill-then-decode logits equal the fixture's transformers logits. Native backend
(lavapipe here) with the real-GPU decode kernels forced (`device.force_matvec`). The fused entry
binds 10 storage buffers (the conv's weight and bias read through the norm weight's binding,
packed after it at load), the tier a Mac's Chrome gives; it took 12 before."""
import numpy as np
import pytest

from tests.browser.conv_fused_cases import RUN, check_fused
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"
IDS = [1, 5, 9, 2, 7, 3, 11, 4]

@pytest.mark.parametrize("stage", [None, True])
@pytest.mark.parametrize("fmt", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied", "mamba2-g1-tied",
                                  "mamba2-g2-untied"])
def test_fused_conv_step_equals_the_separate_dispatches(engine, name, fmt, stage):
    """The engine's mat-vec (its own staging rule), and with x staged in workgroup memory forced."""
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 10:
        pytest.skip("this adapter binds fewer than 10 storage buffers per stage")
    check_fused(engine, FIX / name, fmt, IDS, stage)


@pytest.mark.parametrize("fmt", ["f32", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied", "mamba2-g2-untied"])
def test_fused_conv_step_with_several_rows_per_thread(engine, name, fmt):
    """Each thread reading 4 rows (2 with two sequences), the last workgroup's rows past the end
    included: the conv store loads every row's taps before any store, and still equals the
    separate dispatches bit for bit."""
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 10:
        pytest.skip("this adapter binds fewer than 10 storage buffers per stage")
    check_fused(engine, FIX / name, fmt, IDS, None, rpt=4)


@pytest.mark.parametrize("fmt", ["f16", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "mamba2-g2-untied"])
def test_store_addends_loaded_early_change_nothing(engine, name, fmt):
    """PREFETCH 3 (the store's addends -- the residual out_proj accumulates into, the conv's
    taps -- loaded before the sums): the same logits, states and tokens bit for bit as level 0,
    with the fold and without."""
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 10:
        pytest.skip("this adapter binds fewer than 10 storage buffers per stage")
    r0 = check_fused(engine, FIX / name, fmt, IDS, None, prefetch=0)
    r3 = check_fused(engine, FIX / name, fmt, IDS, None, prefetch=3)
    for key in ("plain", "fused", "fused_b2", "fused_conv", "fused_ssm", "fused_tokens"):
        assert r0[key] == r3[key], key


def test_fused_decode_matches_transformers(engine):
    """Prefill one token at a time through the fused step: transformers' logits (fixture)."""
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 10:
        pytest.skip("this adapter binds fewer than 10 storage buffers per stage")
    folder = FIX / "mamba-d40-tied"
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt="f32", ids=ids)
    got = np.frombuffer(r["fused"], np.float32).reshape(len(ids), -1)
    ref = exp["logits"].reshape(len(ids), -1)
    assert np.abs(got - ref).max() <= 1e-4


def test_the_fused_entry_fits_ten_storage_bindings():
    """10 storage bindings (a Mac's Chrome, SwiftShader) fit the fused entry; 8 do not."""
    from py_engine.ops import weight_format as wf

    class _Dev:
        limits = {"maxStorageBuffersPerShaderStage": 10}
    assert wf.matvec_conv_ok(_Dev())
    _Dev.limits = {"maxStorageBuffersPerShaderStage": 8}
    assert not wf.matvec_conv_ok(_Dev())


UNPACKED = """
from py_engine.gpu.tensor import Tensor
from py_engine.ops import weight_format as wf
from py_engine.ops.rmsnorm import NormedRows
from py_engine.ops.weight_pack import pack_params
x = Tensor.from_list(device, (1, 8), [0.5] * 8)
nw = Tensor.from_list(device, (8,), [1.0] * 8)
cw = Tensor.from_list(device, (6, 4), [0.25] * 24)
cb = Tensor.from_list(device, (6,), [0.1] * 6)
h = NormedRows(x, nw, 1e-5)
apart = wf.conv_binding(h, cw, cb)
pack_params(device, [nw, cw, cb])
packed = wf.conv_binding(h, cw, cb)
plain = wf.conv_binding(x, cw, cb)       # no norm in the kernel: the binding starts at the conv
result = dict(apart=apart is None, packed=None if packed is None else packed[1:],
              plain=None if plain is None else plain[1:], align=device.align,
              base_is_norm=packed is not None and packed[0][1] == nw.offset)
for t in (x, nw, cw, cb):
    t.release()
"""


def test_the_conv_parameters_read_through_the_norm_weights_binding(engine):
    """Apart, there is no such binding (the conv step runs apart); packed after the norm weight,
    the conv weight and bias sit at aligned element offsets of the norm weight's binding."""
    r = engine.run(UNPACKED)
    a = r["align"] // 4
    assert r["apart"] and r["base_is_norm"]
    assert r["packed"] == [a, 2 * a] or tuple(r["packed"]) == (a, 2 * a)
    assert tuple(r["plain"]) == (0, a)
