"""Pipelined decode (Generator.stream): groups of chained steps, one submit per group, `depth`
groups queued while the ids of the oldest come back (one more launched before they are handed
out). The ids equal a token-by-token
decode's; a stop id or a cancel inside a group leaves exactly the token-by-token state (SSM
states, KV cache position, repetition history), so continuing the conversation gives the same
ids as if no step had run past the stop."""
import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
FIXTURES = REPO / "tests" / "fixtures" / "models"

RUN = """
from py_engine.io.hf_loader import load_model
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model(device, args['url'])
prompt, more = args['prompt'], args['more']

def cfg():
    return SamplingConfig(greedy=False, temperature=0.9, top_k=20, repetition_penalty=1.3, seed=5)

async def one_by_one(n, stop=None):
    # the reference: prefill + decode_one, stopping at the first stop id
    g = Generator(model, cfg(), max_tokens=256)
    out = [await g.prefill(prompt)]
    while len(out) < n and out[-1] != stop:
        out.append(await g.decode_one(out[-1]))
    return g, out

async def streamed(n, group, stop=None, cancel_at=None, depth=None, break_at=None, ramp=()):
    # ramp=(): every group `group` steps (the boundaries the cases below place stops at);
    # ramp=None: the default first groups of 1, 2, 3, 4, 6 steps
    g = Generator(model, cfg(), max_tokens=256, group=group, depth=depth, ramp=ramp)
    out = []
    before = device.stats()['submits']
    async for t in g.stream(prompt, n, (stop,) if stop is not None else (),
                            cancelled=lambda: cancel_at is not None and len(out) >= cancel_at):
        out.append(t)
        if break_at is not None and len(out) >= break_at:
            break                   # left without a cancel: the next turn must settle it
    return g, out, device.stats()['submits'] - before

async def state_of(g):
    layers = [{'kv': bool(getattr(l, 'capacity', None)),
               'tensors': [(list(t.shape), await t.to_bytes()) for t in l.tensors()]}
              for l in g.state.layers]
    return {'layers': layers, 'pos': await g.state.pos.to_bytes(), 'seen': g.state.tokens_seen,
            'hist': (await g.history.to_bytes())[:4 * g.n_history], 'n_hist': g.n_history,
            'ctl': await g.ctl.to_bytes(), 'step': g.step_no}

async def then(g):
    # continue the conversation: a new prompt on the kept state
    return [t async for t in g.stream(more, 6)]

res = {}
g0, ref = await one_by_one(args['n'])
res['ref'] = ref
g0.release()
# what the prompt's prefill submits by itself (a streamed batch: one submit per chunk)
g = Generator(model, cfg(), max_tokens=256)
s0 = device.stats()['submits']
await g.prefill(prompt)
res['prefill_submits'] = device.stats()['submits'] - s0
g.release()
for group in (1, 3, 8):
    g, ids, submits = await streamed(args['n'], group)
    res[f'ids{group}'] = ids
    res[f'submits{group}'] = submits
    g.release()
g, res['ids_ramp'], res['submits_ramp'] = await streamed(args['n'], 8, ramp=None)
res['ramp'] = list(g.ramp)
g.release()
# the app's groups sized by the steps' measured time (boundaries vary from run to run)
g, res['ids_auto'], _ = await streamed(args['n'], 'auto', ramp=None)
res['auto_group'] = g.group
g.release()
stop = ref[args['stop_at']]
first_stop = ref.index(stop)
# cancel / break after stop_at + 1 ids: inside a group; cancel_end after 10: the last id of a
# group of 3 (ids 7..9 of the decode), so the rollback is to the next queued group's start
for name, kw, upto in (('stop', dict(stop=stop), None),
                       ('cancel', dict(cancel_at=args['stop_at'] + 1), args['stop_at'] + 1),
                       ('cancel_end', dict(cancel_at=10), 10),
                       ('break', dict(break_at=args['stop_at'] + 1), args['stop_at'] + 1)):
    g_ref, r = await one_by_one(args['n'], stop=stop if name == 'stop' else None)
    if upto is not None:
        r = r[:upto]
        g_ref.release()
        g_ref = Generator(model, cfg(), max_tokens=256)
        r2 = [await g_ref.prefill(prompt)]
        while len(r2) < upto:
            r2.append(await g_ref.decode_one(r2[-1]))
    res[name] = {'ref': r, 'ref_state': await state_of(g_ref), 'ref_then': await then(g_ref)}
    g_ref.release()
    # groups of 8: the stop inside the second of three; groups of 3: the stop opens the fourth,
    # with two more queued behind it (depth 3), or none (depth 1); with the ramp (1, 2, 3, 4,
    # 6, 4 steps) inside the fourth group, after the 10th id or at the end of the fourth
    for group, depth, ramp in ((8, None, ()), (3, None, ()), (3, 1, ()), (8, None, None),
                               ('auto', None, None)):
        g, ids, _ = await streamed(args['n'], group, depth=depth, ramp=ramp, **kw)
        # (after a break the state is settled by the next turn: `then` first, then the state)
        got = {'ids': ids, 'then': await then(g)} if name == 'break' else \
            {'ids': ids, 'state': await state_of(g), 'then': await then(g)}
        res[name][f'{group}/{depth}' + ('/ramp' if ramp is None else '')] = got
        g.release()
res['first_stop'] = first_stop
model.release()
result = res
"""


@pytest.mark.parametrize("name", ["mamba-d40-tied", "nemotronh-mamf-untied"])
def test_pipelined_stream_equals_token_by_token(engine, server, name):
    exp = np.load(FIXTURES / name / "expected.npz")
    prompt = exp["prompt_ids"].tolist()
    n, stop_at = 21, 10            # 20 decoded steps: groups of 8, 8, 4; the stop inside group 2
    out = engine.run(RUN, url=f"{server.url}/weights/{name}/", prompt=prompt, more=prompt[:3],
                     n=n, stop_at=stop_at)
    ref = out["ref"]
    assert len(ref) == n
    for group in (1, 3, 8):
        assert out[f"ids{group}"] == ref, group
        # the prefill's submits (1, or one per streamed chunk), then one per group
        assert out[f"submits{group}"] == out["prefill_submits"] + -(-(n - 1) // group)
    assert out["prefill_submits"] >= 1
    # the default ramp: first groups of 1, 2, 3, 4, 6 steps, then 8 (the last: what is left)
    assert out["ramp"] == [1, 2, 3, 4, 6]
    assert out["ids_ramp"] == ref
    assert out["submits_ramp"] == out["prefill_submits"] + 6   # 1 + 2 + 3 + 4 + 6 + 4 = 20 steps
    assert out["ids_auto"] == ref and out["auto_group"] == 32
    for case in ("stop", "cancel", "cancel_end", "break"):
        c = out[case]
        want = {"stop": ref[:out["first_stop"] + 1], "cancel_end": ref[:10]}.get(case, ref[:stop_at + 1])
        assert c["ref"] == want, case
        for run in ("8/None", "3/None", "3/1", "8/None/ramp", "auto/None/ramp"):
            r, where = c[run], (case, run)
            assert r["ids"] == want, where
            assert r["then"] == c["ref_then"], where
            if case == "break":
                continue
            # the state left behind is the token-by-token one, bit for bit (KV caches up to
            # the position: slots past it are never read, and the next tokens overwrite them)
            got, want_state = dict(r["state"]), dict(c["ref_state"])
            seen = want_state["seen"]
            for la, lb in zip(got.pop("layers"), want_state.pop("layers")):
                for (shape, a), (_, b) in zip(la["tensors"], lb["tensors"]):
                    a, b = (np.frombuffer(v, np.float32).reshape(shape) for v in (a, b))
                    if la["kv"]:                      # [Bsz, KVH, Tmax, Dh]
                        a, b = a[:, :, :seen], b[:, :, :seen]
                    assert np.array_equal(a, b), where
            assert got == want_state, where
            # the position the recorded steps advanced on the GPU (in the sampler's control
            # dispatch) is the number of tokens the state has seen
            assert np.frombuffer(got["pos"], np.uint32).tolist() == [seen], where


SWITCH = """
from py_engine.io.hf_loader import load_model
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model(device, args['url'])
prompt = args['prompt']
g1 = Generator(model, SamplingConfig(greedy=False, temperature=0.8, seed=5), max_tokens=128)
first = [t async for t in g1.stream(prompt, 12)]
snap = await g1.state.to_bytes()
g1.cfg = SamplingConfig(greedy=True)          # the next turn switches to greedy
second = [t async for t in g1.stream(prompt[:2], 10)]
g2 = Generator(model, SamplingConfig(greedy=True), max_tokens=128)
g2.state.load_bytes(snap)
fresh = [t async for t in g2.stream(prompt[:2], 10)]
for g in (g1, g2):
    g.release()
model.release()
result = {'second': second, 'fresh': fresh}
"""


def test_changed_sampling_settings_apply_to_the_next_turn(engine, server):
    """The decode step graph bakes the sampler settings in: switching a kept conversation from
    sampling to greedy must re-record it (greedy from the same state == a fresh greedy run)."""
    exp = np.load(FIXTURES / "mamba-d40-tied" / "expected.npz")
    out = engine.run(SWITCH, url=f"{server.url}/weights/mamba-d40-tied/",
                     prompt=exp["prompt_ids"].tolist())
    assert out["second"] == out["fresh"]
