"""A decode state's recurrent tensors live in one buffer (ModelState._pack): every tensor a
prefill overwrites -- conv and SSM states, not attention caches -- at its own 256-byte-aligned
range of it, so a decode group's rollback copy and a prefill's backup are one copy command
(plus the position) instead of one per tensor (97 at mamba-1.4b). Checked on the native backend:
the layout (aligned, disjoint, in the buffer; KV caches outside), the group recording's copies,
and that a stream stopped inside a group leaves the token-by-token state bit for bit
(tests/browser/test_decode_pipeline.py checks that in every grouping, in Chromium)."""
import pytest

from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"

RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
m = await load_model_local(device, args['folder'])
st = m.new_state()
out = {'packed': st.packed is not None,
       'spans': len(st.overwritten_spans()),
       'ranges': [(t.buffer is st.packed.buffer, t.offset - st.packed.offset, t.nbytes)
                  for t in st.overwritten_tensors()] if st.packed is not None else [],
       'packed_bytes': st.packed.nbytes if st.packed is not None else 0,
       'kv_outside': all(t.buffer is not (st.packed.buffer if st.packed else None)
                         for l in st.layers if getattr(l, 'capacity', None) for t in l.tensors())}
st.release()
cfg = lambda: SamplingConfig(greedy=False, temperature=0.9, top_k=20, seed=5)
ref = Generator(m, cfg(), max_tokens=128)
ids = [await ref.prefill(args['prompt'])]
while len(ids) < 12:
    ids.append(await ref.decode_one(ids[-1]))
stop = ids[6]
n_ref = ids.index(stop) + 1
ref.release()
ref = Generator(m, cfg(), max_tokens=128)
r = [await ref.prefill(args['prompt'])]
while len(r) < n_ref:
    r.append(await ref.decode_one(r[-1]))
g = Generator(m, cfg(), max_tokens=128, group=4, ramp=())
got = [t async for t in g.stream(args['prompt'], 12, (stop,))]
out['ids'], out['ref_ids'] = got, r
out['shadow_copies'] = len(g._shadow[0]) if g._shadow else None
# the recurrent tensors and the position (KV slots past the position differ and are never
# read: tests/browser/test_decode_pipeline.py compares the caches up to it)
out['state'] = [await t.to_bytes() for t in g.state.overwritten_tensors() + [g.state.pos]]
out['ref_state'] = [await t.to_bytes() for t in ref.state.overwritten_tensors() + [ref.state.pos]]
g.release(); ref.release(); m.release()
result = out
"""


@pytest.mark.parametrize("name", ["mamba-d40-tied", "mamba2-g2-untied", "nemotronh-mamf-untied"])
def test_recurrent_state_is_one_buffer_and_rolls_back_in_one_copy(engine, name):
    out = engine.run(RUN, folder=str(FIX / name), prompt=[1, 5, 9, 2])
    assert out["packed"] and out["spans"] == 1 and out["kv_outside"]
    ends = 0
    for inside, off, n in out["ranges"]:      # in layer order, aligned, disjoint, inside
        assert inside and off % 256 == 0 and off >= ends
        ends = off + n
    assert ends <= out["packed_bytes"]
    assert out["shadow_copies"] == 2          # the packed states and the position
    assert out["ids"] == out["ref_ids"] and len(out["ids"]) < 12     # stopped inside a group
    assert out["state"] == out["ref_state"]
