"""Which dispatches a draw records (py_engine/ops/sampling.sample), by setting, on a GPU-like
device (not a CPU adapter) and on a CPU adapter: the passes over the row where a draw would
otherwise walk it in one workgroup (top-p alone, top-k past the candidates' 128, plain
temperature), the slices' candidates for top-k up to 128, and the penalty in the first
dispatch that reads the row -- never a sampling_penalise beside a chain that penalises its own
slices."""
import pytest

from tests.unit.test_shader_include import FakeBatch, FakeDevice


def _entries(fallback, V=50280, **kw):
    from py_engine.gpu.tensor import Tensor
    from py_engine.ops import sampling
    dev = FakeDevice(features={"subgroups"}, fallback=fallback)
    batch = FakeBatch(dev)
    hist = Tensor(dev, (1, 4), "u32")
    sampling.sample(batch, Tensor(dev, (1, V)), sampling.make_control(dev, 1), history=hist,
                    **kw)
    return [entry for _, entry, _ in batch.runs]


PASS = ["sampling_topp_pass"] * 8
DRAW = ["sampling_slices_draw", "sampling_greedy_final"]


@pytest.mark.parametrize("kw,want", [
    (dict(top_p=0.9, repetition_penalty=1.1), PASS + DRAW),
    (dict(top_p=0.9), PASS + DRAW),
    (dict(top_k=300, top_p=0.9, repetition_penalty=1.1), ["sampling_topk_pass"] * 4 + PASS + DRAW),
    (dict(top_k=300), ["sampling_topk_pass"] * 4 + DRAW),
    (dict(temperature=0.8, repetition_penalty=1.1), ["sampling_max_pass"] + DRAW),
    (dict(temperature=0.8), ["sampling_max_pass"] + DRAW),
    (dict(top_k=40, top_p=0.95, repetition_penalty=1.1),
     ["sampling_candidates", "sampling_sample"]),
    (dict(greedy=True, repetition_penalty=1.1),
     ["sampling_greedy_part", "sampling_greedy_final"]),
], ids=["p", "p-nopen", "k300-p", "k300", "t", "t-nopen", "k40-p", "greedy"])
def test_a_gpu_records_the_spread_forms(kw, want):
    assert _entries(False, **kw) == want


@pytest.mark.parametrize("kw,want", [
    (dict(top_p=0.9, repetition_penalty=1.1), ["sampling_penalise", "sampling_sample"]),
    (dict(top_k=300, top_p=0.9), ["sampling_sample"]),
    (dict(temperature=0.8, repetition_penalty=1.1), ["sampling_penalise", "sampling_sample"]),
])
def test_a_cpu_adapter_walks_the_row(kw, want):
    """SwiftShader and lavapipe: top-p alone, a wide top-k and temperature alone in one
    workgroup (by rule)."""
    assert _entries(True, **kw) == want


@pytest.mark.parametrize("V,kw,want", [
    (16383, dict(top_p=0.9), ["sampling_candidates", "sampling_sample"]),
    (16384, dict(top_p=0.9), PASS + DRAW),
    (16383, dict(temperature=0.8), ["sampling_sample"]),
    (16384, dict(temperature=0.8), ["sampling_max_pass"] + DRAW),
    (39999, dict(top_k=300, top_p=0.9), ["sampling_sample"]),
    (40000, dict(top_k=300, top_p=0.9), ["sampling_topk_pass"] * 4 + PASS + DRAW),
    (39999, dict(top_k=300), ["sampling_sample"]),
], ids=["p-16383", "p-16384", "t-16383", "t-16384", "k300-p-39999", "k300-p-40000", "k300-39999"])
def test_the_passes_start_where_they_measured_faster(V, kw, want):
    """Below PASSES_FROM (TOPK_PASSES_FROM with a wide top-k) logits one workgroup walking the
    row was faster on the H200 (sampling.PASSES_FROM's table): top-p alone over the candidates,
    temperature alone and a wide top-k walking the row."""
    from py_engine.ops.sampling import PASSES_FROM, TOPK_PASSES_FROM
    assert (PASSES_FROM, TOPK_PASSES_FROM) == (16384, 40000)
    assert _entries(False, V=V, **kw) == want


def test_passes_off_by_setting(monkeypatch):
    monkeypatch.setenv("MAMBAWEB_SAMPLE_PASSES", "0")
    assert _entries(False, top_p=0.9) == ["sampling_candidates", "sampling_sample"]
    assert _entries(False, top_k=300, top_p=0.9) == ["sampling_sample"]
    assert _entries(False, temperature=0.8) == ["sampling_sample"]
