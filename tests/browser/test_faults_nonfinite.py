"""Non-finite steps (issue 13): a poisoned step -- a NaN logit (loss and gradients
non-finite), a NaN loss with finite gradients, or a NaN in one gradient -- is skipped: no
parameter, no AdamW moment and no AdamW step count changes; it is counted; training goes on,
and the steps after it equal those of a run that never saw that batch.

"A run that never saw that batch", as defined here: the same initial weights fed the same
batches minus the poisoned one, each remaining step at the learning rate the poisoned run
used for it (the step index, and with it the LR schedule and the data order, still advances
on a skipped step, as torch's GradScaler leaves the LR scheduler stepping)."""
import math

import pytest

pytestmark = pytest.mark.browser

TEXT = "Hello, Mamba! 0123456789 xyz\n" * 120
MODEL = {"size": "tiny", "hidden_size": 32, "num_hidden_layers": 2, "state_size": 8}
TRAIN = {"lr": 5e-3, "batch": 2, "seq_len": 32, "steps": 40, "warmup": 2,
         "sample_every": 0, "seed": 5}

RUN = """
import hashlib
from py_engine.train import session as S
from py_engine.train.data import ByteTokenizer
sess = await S.PretrainSession.create(device, [args['text']], ByteTokenizer(), args['model'],
                                      args['train'])
tr = sess.trainer
B, T = args['train']['batch'], args['train']['seq_len']
batches = [sess.batcher.next_batch() for _ in range(4)]

async def digest():
    # parameters, both AdamW moments and the AdamW step count, as one hash
    h = hashlib.sha256()
    for n in sorted(tr.params):
        h.update(await tr.params[n].to_bytes())
        h.update(await tr.opt.m[n].to_bytes())
        h.update(await tr.opt.v[n].to_bytes())
    h.update(str(tr.opt.t).encode())
    return h.hexdigest()

recs, digests = [], []
for i, lr in enumerate(args['lrs']):
    if i in args['skip_batches']:
        continue
    if i == args['poison_at']:
        tr.poison = args['kind']
    r = await tr.train_step([(batches[i], batches[i])], B, T, lr=lr)
    recs.append({'loss': r['loss'], 'skipped': r['skipped'], 'total': r['skipped_total'],
                 'norm': r['grad_norm']})
    digests.append(await digest())
result = {'recs': recs, 'digests': digests, 'adam_t': tr.opt.t, 'step': tr.step_count}
sess.release()
"""

LRS = [5e-3, 4e-3, 3e-3, 2e-3]


@pytest.mark.parametrize("kind", ["logits", "loss", "grad"])
def test_poisoned_step_is_skipped_and_the_run_goes_on(engine, kind):
    run = engine.run(RUN, text=TEXT, model=MODEL, train=TRAIN, lrs=LRS, poison_at=1,
                     skip_batches=[], kind=kind)
    recs, dig = run["recs"], run["digests"]
    assert [r["skipped"] for r in recs] == [False, True, False, False]
    assert [r["total"] for r in recs] == [0, 1, 1, 1]
    # the poisoned step changed nothing: parameters, moments and AdamW's count as before it
    assert dig[1] == dig[0]
    assert run["adam_t"] == 3 and run["step"] == 4
    if kind == "grad":
        assert math.isfinite(recs[1]["loss"])               # a finite loss, a NaN gradient
        assert not math.isfinite(recs[1]["norm"])
    else:
        assert not math.isfinite(recs[1]["loss"])           # reported as such
    # the same weights fed batches 0, 2, 3 at the same learning rates
    ref = engine.run(RUN, text=TEXT, model=MODEL, train=TRAIN, lrs=LRS, poison_at=-1,
                     skip_batches=[1], kind=None)
    assert [r["skipped"] for r in ref["recs"]] == [False, False, False]
    got = [recs[0]["loss"], recs[2]["loss"], recs[3]["loss"]]
    want = [r["loss"] for r in ref["recs"]]
    assert got == pytest.approx(want, abs=1e-6, rel=0)
    assert [dig[0], dig[2], dig[3]] == ref["digests"]       # bit-identical weights and moments


SESSION = """
from py_engine.train import session as S
from py_engine.train.data import ByteTokenizer
sess = await S.PretrainSession.create(device, [args['text']], ByteTokenizer(), args['model'],
                                      args['train'])
events = []
out = [await sess.train_one()]
sess.trainer.poison = 'logits'
out.append(await sess.train_one())
out.append(await sess.train_one())
import json
result = {'events': out, 'json': [json.dumps(e, allow_nan=False) for e in out],
          'history': sess.history, 'meta_skipped': sess.state_meta()['skipped']}
sess.release()
"""


def test_session_reports_a_skipped_step_in_plain_json(engine):
    out = engine.run(SESSION, text=TEXT, model=MODEL, train=TRAIN)
    ev = out["events"]
    assert [e["skipped"] for e in ev] == [0, 1, 1]
    assert ev[1]["loss"] is None and ev[1].get("skipped_step") is True
    assert ev[2]["loss"] is not None and ev[2]["loss"] > 0
    assert [p[0] for p in out["history"]] == [1, 3]        # the curve leaves the hole
    assert out["meta_skipped"] == 1                         # saved with the state
