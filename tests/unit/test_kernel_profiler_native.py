"""Per-kernel GPU time on the native backend (py_engine/gpu/native_profile.py), both ways, on
lavapipe: in one pass with a timestamp after every dispatch (the dispatches encoded as decode
encodes them, a copy ending the pass) and with a pass per dispatch. Every dispatch is counted
under its shader:entry, times are positive, the share adds up to 1, and the work's results are
what the unprofiled device computes."""
import pytest

from tests.native_support import engine, native as pytestmark  # noqa: F401

SNIPPET = """
from py_engine.gpu.native_profile import KernelProfiler
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as E
a = Tensor.from_list(device, (1024,), [float(i % 7) for i in range(1024)])
b = Tensor.from_list(device, (1024,), [0.5] * 1024)
c, d = Tensor(device, (1024,)), Tensor(device, (1024,))
prof = KernelProfiler(device, in_pass=args['in_pass'], span=args.get('span', False))
device.profiler = prof
try:
    batch = device.batch()
    E.add(batch, a, b, out=c)                      # add, mul, a copy (ends the pass), silu x2
    E.mul(batch, c, b, out=d)
    batch.copy(d.buffer, d.offset, c.buffer, c.offset, d.nbytes)
    E.silu(batch, c, out=d)
    E.silu(batch, d, out=c)
    batch.submit()
    rows = await prof.collect()
finally:
    device.profiler = None
result = {'rows': rows, 'in_pass': prof.in_pass, 'out': (await c.to_list())[:8]}
"""


@pytest.mark.parametrize("in_pass", [True, False])
def test_profiled_chain(engine, in_pass):
    import math
    r = engine.run(SNIPPET, in_pass=in_pass)
    assert r["in_pass"] is in_pass
    calls = {row["kernel"].split(":")[1]: row["calls"] for row in r["rows"]}
    assert sorted(calls.items()) == [("add_forward", 1), ("mul_forward", 1),
                                     ("silu_forward", 2)], calls
    assert all(row["gpu_us"] > 0 for row in r["rows"])
    assert abs(sum(row["share"] for row in r["rows"]) - 1) < 1e-3
    silu = lambda v: v / (1 + math.exp(-v))
    want = [silu(silu((i % 7 + 0.5) * 0.5)) for i in range(8)]
    assert max(abs(g - w) for g, w in zip(r["out"], want)) < 1e-5


def test_span_times_each_pass_whole(engine):
    """span=True (tools/sweep_matvec.py --chain): each run of dispatches is one pass stamped at
    its two ends only (the copy ends the first), its dispatches counted under "pass"; the
    results are what the unprofiled device computes."""
    import math
    r = engine.run(SNIPPET, in_pass=False, span=True)
    assert [(row["kernel"], row["calls"]) for row in r["rows"]] == [("pass", 4)], r["rows"]
    assert r["rows"][0]["gpu_us"] > 0 and r["rows"][0]["share"] == 1
    silu = lambda v: v / (1 + math.exp(-v))
    want = [silu(silu((i % 7 + 0.5) * 0.5)) for i in range(8)]
    assert max(abs(g - w) for g, w in zip(r["out"], want)) < 1e-5
