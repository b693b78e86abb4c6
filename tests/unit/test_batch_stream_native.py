"""A streaming batch (device.batch(stream=True), py_engine/gpu/batch.py) submits what it has
recorded in growing chunks while the rest is recorded, so the GPU starts on a prefill's first
layers while Python still encodes its last ones. Checked on the native backend: a long chain
submits in the planned chunks and computes what one submit computes, bit for bit; a model's
prefill logits (Generator.prefill and MambaModel.logits stream) equal the unstreamed ones; a
streamed batch refuses to become a Recording; a prefill failing part-way loses nothing. Real GPUs
stream; a software adapter does not unless told (`device.stream_batches`), as here."""
import pytest

from py_engine.gpu import batch as B
from tests.native_support import engine, native as pytestmark  # noqa: F401

CHAIN = """
device.stream_batches = True                       # a real GPU's choice, on lavapipe too
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as E
out = {}
for stream in (False, True):
    a = Tensor.from_list(device, (64,), [0.01 * i for i in range(64)])
    b = Tensor(device, (64,))
    s0 = device.stats()['submits']
    batch = device.batch(stream=stream)
    for i in range(args['n']):                     # a <- silu(b <- a + a), n times
        E.add(batch, a, a, out=b)
        E.silu(batch, b, out=a)
    counted = batch.dispatch_count
    batch.submit()
    out[str(stream)] = {'values': await a.to_list(), 'dispatches': counted,
                        'submits': device.stats()['submits'] - s0}
    a.release(); b.release()
device.stream_batches = None
result = out
"""


def _chunks(n):
    """The submits a streaming batch of n dispatches makes: FIRST_CHUNK, doubling to MAX_CHUNK,
    then the rest at submit()."""
    submits, left, chunk = 0, n, B.FIRST_CHUNK
    while left >= chunk:
        submits, left, chunk = submits + 1, left - chunk, min(B.MAX_CHUNK, 2 * chunk)
    return submits + (1 if left else 0)


def test_a_streamed_chain_submits_in_chunks_and_computes_the_same(engine):
    n = 300                                            # 600 dispatches: 32+64+128+256, then 120
    r = engine.run(CHAIN, n=n)
    one, streamed = r["False"], r["True"]
    assert one["submits"] == 1 and one["dispatches"] == streamed["dispatches"] == 2 * n
    assert streamed["submits"] == _chunks(2 * n) == 5
    assert streamed["values"] == one["values"]         # the same commands in the same order
    assert max(streamed["values"]) > 0


MODEL = """
device.stream_batches = True
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
from py_engine.autograd.functional import Ctx
import py_engine.gpu.batch as B
model = await load_model_local(device, args['folder'])
ids = [(i * 37) % model.cfg.vocab_size for i in range(args['T'])]
out = {}
for first in (10 ** 9, 4):                         # never flushed / flushed every few layers
    B.FIRST_CHUNK, B.MAX_CHUNK = first, max(first, 8)
    s0 = device.stats()['submits']
    logits = await model.logits(ids)
    gen = Generator(model, SamplingConfig(greedy=True), max_tokens=args['T'] + 8)
    tok = await gen.prefill(ids)
    gen.release()
    out[str(first)] = {'logits': logits, 'token': tok, 'submits': device.stats()['submits'] - s0}
B.FIRST_CHUNK, B.MAX_CHUNK = 32, 256
device.stream_batches = None
model.release()
result = out
"""


@pytest.mark.parametrize("fixture", ["mamba-d24-untied", "mamba2-g1-tied"])
def test_streamed_prefill_equals_one_submit(engine, fixture):
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "models" / fixture
    r = engine.run(MODEL, folder=str(folder), T=24)
    whole, streamed = r[str(10 ** 9)], r["4"]
    assert streamed["submits"] > whole["submits"] + 4  # the forward went in several chunks
    assert streamed["logits"] == whole["logits"]       # bit for bit
    assert streamed["token"] == whole["token"]


def test_a_streamed_batch_cannot_be_recorded(engine):
    r = engine.run("""
device.stream_batches = True
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as E
import py_engine.gpu.batch as B
a, b = Tensor.from_list(device, (4,), [1.0] * 4), Tensor(device, (4,))
batch = device.batch(stream=True)
for i in range(B.FIRST_CHUNK):
    E.silu(batch, a, out=b)
try:
    batch.record()
    result = 'recorded'
except RuntimeError as e:
    result = str(e)
batch.submit()
device.stream_batches = None
""")
    assert "stream=False" in r


FAIL_MIDWAY = """
device.stream_batches = args['stream']
import py_engine.autograd.functional as F
import py_engine.gpu.batch as B
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model_local(device, args['folder'])
first, second = [5, 9, 2, 7], [(i * 37) % model.cfg.vocab_size for i in range(20)]
async def kept(st):
    # what the state holds for the tokens seen: the recurrent tensors whole, an attention
    # cache's slots below the position (a failed prefill may have written slots past it)
    out = [await t.to_bytes() for t in st.overwritten_tensors()]
    for layer in st.layers:
        if getattr(layer, 'APPEND_ONLY', False):
            for t in layer.tensors():
                data, (Bsz, KVH, Tmax, Dh) = await t.to_bytes(), t.shape
                out += [data[h * Tmax * Dh * 4:(h * Tmax + st.tokens_seen) * Dh * 4]
                        for h in range(Bsz * KVH)]
    return out

gen = Generator(model, SamplingConfig(greedy=True), max_tokens=64)
await gen.prefill(first)
state_before = await kept(gen.state)
seen, hist = gen.state.tokens_seen, gen.n_history
linear, linear_many, calls = F.linear, F.linear_many, []
def failing(op):                               # projection call `fail_at` cannot be recorded
    def call(*a, **k):
        calls.append(1)
        if len(calls) == args['fail_at']:
            raise MemoryError("no GPU memory for this activation (test)")
        return op(*a, **k)
    return call
B.FIRST_CHUNK, B.MAX_CHUNK = 4, 8              # chunks go to the GPU before the failure
s0 = device.stats()['submits']
F.linear, F.linear_many = failing(linear), failing(linear_many)
try:
    await gen.prefill(second)
    error = None
except MemoryError as e:
    error = str(e)
finally:
    F.linear, F.linear_many = linear, linear_many
    B.FIRST_CHUNK, B.MAX_CHUNK = 32, 256
out = {'error': error, 'submits_before_failure': device.stats()['submits'] - s0,
       'layers': model.cfg.num_hidden_layers,
       'same_state': await kept(gen.state) == state_before,
       'seen': [seen, gen.state.tokens_seen], 'history': [hist, gen.n_history]}
out['backed_up'] = gen._backup is not None     # copies made for a rollback
out['retry'] = await gen.prefill(second)       # the same prompt again, nothing failing now
out['retry_state'] = await gen.state.to_bytes()
gen.release()
ref = Generator(model, SamplingConfig(greedy=True), max_tokens=64)
await ref.prefill(first)
out['ref'] = await ref.prefill(second)
out['ref_state'] = await ref.state.to_bytes()
ref.release()
device.stream_batches = None
model.release()
result = out
"""


# the projection call that fails: inside the second of Mamba-1's layers (in_proj, x_proj,
# dt_proj a layer), and the hybrid's MLP, its third layer of four (Mamba-2's in_proj, attention's
# q|k|v, the MLP's up, Mamba-2's in_proj, then the head)
@pytest.mark.parametrize("fixture,stream,fail_at", [("mamba-d24-untied", True, 5),
                                                    ("nemotronh-mamf-untied", True, 3),
                                                    ("mamba-d24-untied", False, 5)])
def test_a_prefill_failing_part_way_leaves_the_state_as_it_was(engine, fixture, stream, fail_at):
    """A streamed prefill runs its first layers on the GPU while later ones are recorded: when
    recording fails part-way (here a projection of a middle layer, after chunks were submitted), the
    state those layers overwrote is copied back, the position, token count and history are as
    before, and the same prompt then gives what it gives on a generator that never failed --
    Mamba-1, and a hybrid whose attention layers' caches gained slots past the position.
    Unstreamed (software adapters), nothing runs before the submit: no copies are made, and
    the state is as before all the same."""
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "models" / fixture
    r = engine.run(FAIL_MIDWAY, folder=str(folder), stream=stream, fail_at=fail_at)
    assert r["error"] == "no GPU memory for this activation (test)" and r["layers"] >= 2
    if stream:
        assert r["submits_before_failure"] >= 2        # layers ran before the failure
        assert r["backed_up"]
    else:
        assert r["submits_before_failure"] == 0 and not r["backed_up"]
    assert r["same_state"]
    assert r["seen"][0] == r["seen"][1] and r["history"][0] == r["history"][1]
    assert r["retry"] == r["ref"] and r["retry_state"] == r["ref_state"]


def test_only_real_gpus_stream_unless_told(engine):
    r = engine.run("""
import os
out = [device.batch(stream=True).stream, device.batch().stream]
device.stream_batches = True
out.append(device.batch(stream=True).stream)
device.stream_batches = None
os.environ['MAMBAWEB_BATCH_STREAM'] = '1'
out.append(device.batch(stream=True).stream)
os.environ['MAMBAWEB_BATCH_STREAM'] = 'yes'
try:
    device.batch(stream=True)
    out.append(None)
except ValueError as e:
    out.append(str(e))
del os.environ['MAMBAWEB_BATCH_STREAM']
result = out + [bool(device.info.get('is_fallback'))]
""")
    fallback = r.pop()
    refused = r.pop()
    assert r == [not fallback, False, True, True]
    assert "MAMBAWEB_BATCH_STREAM must be '1' or '0'" in refused
