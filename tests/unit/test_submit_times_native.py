"""Where the host's time goes when it submits (Device.take_submit_times, the bench's
decode host_split), on the native backend: every batch and command is counted once, the times
are positive, and taking them zeroes the counts."""
from tests.native_support import engine, native as pytestmark  # noqa: F401

SNIPPET = """
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as E
a = Tensor.from_list(device, (256,), [1.0] * 256)
b, c = Tensor(device, (256,)), Tensor(device, (256,))
device.take_submit_times()                         # whatever ran before
batch = device.batch()
E.add(batch, a, a, out=b)
E.mul(batch, b, a, out=c)
batch.copy(c.buffer, c.offset, a.buffer, a.offset, 16)
batch.submit()
rec_batch = device.batch()
E.silu(rec_batch, a, out=b)
rec = rec_batch.record()
rec.replay()
rec.replay()
first = device.take_submit_times()
result = {'first': first, 'again': device.take_submit_times(), 'b': (await b.to_list())[:2]}
"""


def test_submit_times_count_each_batch(engine):
    r = engine.run(SNIPPET)
    t = r["first"]
    assert t["batches"] == 3 and t["commands"] == 3 + 1 + 1     # 2 dispatches + a copy; 2 replays
    assert t["encode_ms"] > 0 and t["finish_ms"] > 0 and t["submit_ms"] > 0
    assert r["again"] == {"encode_ms": 0, "finish_ms": 0, "submit_ms": 0, "batches": 0,
                          "commands": 0}
    assert r["b"][0] > 0                                          # the replays ran: silu(2) > 0


PREFIX = """
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as E
a = Tensor.from_list(device, (4,), [1.0, 2.0, 3.0, 4.0])
b, c = Tensor.from_list(device, (4,), [0.0] * 4), Tensor.from_list(device, (4,), [0.0] * 4)
batch = device.batch()
E.add(batch, a, a, out=b)                           # b = 2a
batch.copy(b.buffer, b.offset, c.buffer, c.offset + 8, 4)   # c[2] = b[0]
E.add(batch, b, b, out=c)                           # c = 2b
E.add(batch, c, c, out=b)                           # b = 2c
rec = batch.record()
device.take_submit_times()
d0 = device.stats()['dispatches']
rec.replay(2)                                       # the first add and the copy only
mid = [await b.to_list(), await c.to_list()]
d1 = device.stats()['dispatches']
rec.replay()                                        # all of it
result = {'mid': mid, 'end': [await b.to_list(), await c.to_list()],
          'times': device.take_submit_times(),
          'dispatches': [d1 - d0, device.stats()['dispatches'] - d1]}
"""


def test_a_recording_replays_its_first_commands(engine):
    """Recording.replay(count): the first `count` commands only, counted as such (the
    Generator's shorter groups replay the first steps of the full group's recording)."""
    r = engine.run(PREFIX)
    assert r["mid"] == [[2.0, 4.0, 6.0, 8.0], [0.0, 0.0, 2.0, 0.0]]
    assert r["end"] == [[8.0, 16.0, 24.0, 32.0], [4.0, 8.0, 12.0, 16.0]]
    assert r["dispatches"] == [1, 3]
    assert r["times"]["batches"] == 2 and r["times"]["commands"] == 2 + 4
