"""What ops/sampling.sample refuses, by name, before recording anything: a repetition penalty
of 0 or less (its reciprocal is packed as an f32), a temperature too small for its reciprocal
(0 means greedy), threads a row that the kernels' trees and digit search cannot take."""
import pytest

from py_engine.gpu.tensor import Tensor
from py_engine.ops import sampling
from tests.unit.test_shader_include import FakeBatch, FakeDevice


@pytest.mark.parametrize("kw,words", [
    (dict(repetition_penalty=0.0), "repetition_penalty must be at least 1e-30"),
    (dict(repetition_penalty=-1.1), "repetition_penalty must be at least 1e-30"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty must be at least 1e-30"),
    (dict(temperature=1e-40), "too small to sample with: use 0 for greedy"),
    (dict(temperature=float("nan")), "too small to sample with"),
    (dict(wg=48), "wg (threads a row) must be 32, 64, 128 or 256"),
])
def test_refused_by_name(kw, words):
    batch = FakeBatch(FakeDevice())
    with pytest.raises(ValueError) as e:
        sampling.sample(batch, Tensor(batch.device, (1, 600)), top_k=5, **kw)
    assert words in str(e.value)
    assert batch.runs == []


def test_greedy_takes_any_temperature_at_or_below_0():
    batch = FakeBatch(FakeDevice())
    sampling.sample(batch, Tensor(batch.device, (1, 600)), temperature=0.0)
    assert [r[1] for r in batch.runs] == ["sampling_greedy_part", "sampling_greedy_final"]
