"""GPU sampling (shaders/sampling.wgsl, py_engine/ops/sampling.py) in headless Chromium.

Greedy equals argmax (lowest index on ties); repetition penalty is HF's; top-k / top-p never
pick outside the set HF's warpers keep, and many draws (one row each, same logits) follow the
renormalised softmax; the same (seed, step) gives the same ids and a recorded graph replays
with only the control buffer rewritten. Draws from many rows come from one dispatch.
"""
import numpy as np
import pytest

from tests.browser.kernel_harness import runner

pytestmark = pytest.mark.browser

gpu = runner("""
import struct
import py_engine.ops.sampling as S
""", decode=False)


def ids(raw):
    return np.frombuffer(raw, dtype=np.uint32).astype(np.int64)


rng = np.random.default_rng(99)


def hf_keep(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Boolean mask of the tokens HF's Temperature -> TopK -> TopP warpers leave finite
    (their algorithm, in float64)."""
    x = np.asarray(logits, np.float64) / temperature
    if 0 < top_k < x.size:
        thr = np.sort(x)[-top_k]
        x = np.where(x < thr, -np.inf, x)
    if top_p < 1.0:
        order = np.argsort(x, kind="stable")                 # ascending
        e = np.exp(x[order] - x.max())
        cum = np.cumsum(e / e.sum())
        remove = cum <= 1 - top_p
        remove[-1] = False
        x[order[remove]] = -np.inf
    return np.isfinite(x)


def renorm(logits, keep, temperature=1.0):
    x = np.asarray(logits, np.float64) / temperature
    e = np.where(keep, np.exp(x - x[keep].max()), 0.0)
    return e / e.sum()


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("V", [1, 7, 1000, 152064, 300_000])
def test_greedy_is_argmax_lowest_index_on_ties(engine, V):
    rows = 3
    lg = rng.standard_normal((rows, V)).astype(np.float32)
    if V > 1:
        lg[0, V // 3] = lg[0, V - 1] = lg[0].max() + 1.0      # tie: the lower index wins
        lg[1, :] = -np.inf
        lg[1, V // 2:] = 2.0                                    # -inf and an all-equal tail
        lg[2, 0] = np.nan                                       # NaN never wins
    if V > 256 * 1024:   # a tie between a workgroup's first and second slice (of 1,024)
        lg[2, 5] = lg[2, 5 + 256 * 1024] = lg[2, 1:].max() + 1.0
    code = """
out = S.sample(b, T['lg'], greedy=True)
info['dispatches'] = b.dispatch_count
outs['ids'] = out
"""
    o, info = gpu(engine, code, lg=lg)
    ref = [int(np.nanargmax(r)) if not np.isnan(r).all() else 0 for r in lg]
    assert ids(o["ids"]).tolist() == ref
    assert info["dispatches"] == 2      # per-slice candidates, then one pick per row


def test_repetition_penalty_matches_hf(engine):
    """The penalised row (sampling_penalise's scratch, which a draw without top-k walks) is
    HF's, and greedy -- penalising the slices it reads itself -- takes its argmax."""
    rows, V, H = 2, 50, 12
    lg = rng.standard_normal((rows, V)).astype(np.float32) * 3
    hist = rng.integers(0, V, (rows, H)).astype(np.uint32)
    hist[0, :4] = hist[0, 0]          # repeats count once
    counts = [9, 12]                   # row 0: only the first 9 entries are history
    pen = 1.3
    code = f"""
ctl = S.make_control(dev, {rows}, step=0, counts={counts})
g = S.sample(b, T['lg'], ctl, greedy=True, repetition_penalty={pen}, history=T['hist'])
info['greedy_dispatches'] = b.dispatch_count
scratch = Tensor(dev, ({rows}, {V}))
S.sample(b, T['lg'], ctl, top_p=0.5, repetition_penalty={pen}, history=T['hist'],
         scratch=scratch)
info['draw_dispatches'] = b.dispatch_count - info['greedy_dispatches']
outs.update(ids=g, scratch=scratch)
"""
    o, info = gpu(engine, code, lg=lg, hist=hist)
    ref = lg.astype(np.float64).copy()
    for r in range(rows):
        for t in set(hist[r, :counts[r]].tolist()):
            v = lg[r, t]
            ref[r, t] = v * pen if v < 0 else v / pen
    got = np.frombuffer(o["scratch"], dtype=np.float32).reshape(rows, V)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    assert ids(o["ids"]).tolist() == ref.argmax(1).tolist()
    assert info["greedy_dispatches"] == 2    # greedy's two, penalising as they read: no copy
    assert info["draw_dispatches"] == 2      # the penalised row, then the draw over it
    # HF's own processor agrees with the semantics written out above (`make test` installs
    # the reference extra: torch and transformers are there, not optional)
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
    for r in range(rows):
        hf = RepetitionPenaltyLogitsProcessor(pen)(
            torch.tensor(hist[r:r + 1, :counts[r]].astype(np.int64)), torch.tensor(lg[r:r + 1]))
        assert np.abs(hf.numpy()[0] - got[r]).max() <= 1e-6 * np.abs(ref).max()


def test_greedy_penalty_past_one_slice_a_workgroup(engine):
    """Greedy with a penalty over more slices than workgroups (V > 256 slices of 1,024: each
    workgroup takes several): a penalised maximum in a workgroup's second slice loses to the
    next value, which wins only penalised; the row's other maxima are penalised away."""
    V = 300_000
    lg = rng.uniform(-1, 1, (1, V)).astype(np.float32)
    first, second, runner_up = 5, 256 * 1024 + 7, 299_990   # second: workgroup 0's 2nd slice
    lg[0, first] = 9.0
    lg[0, second] = 10.0
    lg[0, runner_up] = 4.0
    hist = np.array([[second, first, 3]], np.uint32)
    code = """
ctl = S.make_control(dev, 1, step=0, counts=[3])
outs['ids'] = S.sample(b, T['lg'], ctl, greedy=True, repetition_penalty=4.0, history=T['hist'])
"""
    o, _ = gpu(engine, code, lg=lg, hist=hist)
    assert ids(o["ids"]).tolist() == [runner_up]      # 10/4 and 9/4 fall below 4.0


DIST_CASES = [  # temperature, top_k, top_p
    (1.0, 0, 1.0),
    (0.7, 5, 1.0),
    (1.3, 0, 0.8),
    (0.9, 8, 0.7),
]


@pytest.mark.parametrize("temperature,top_k,top_p", DIST_CASES)
def test_sampling_distribution_and_allowed_set(engine, temperature, top_k, top_p):
    V, rows = 24, 4000
    lg = (rng.standard_normal(V) * 1.5).astype(np.float32)
    keep = hf_keep(lg, temperature, top_k, top_p)
    q = renorm(lg, keep, temperature)
    code = f"""
lg = T['lg']
ctl = S.make_control(dev, {rows}, step=5)
kw = dict(temperature={temperature}, top_k={top_k}, top_p={top_p}, seed=1234)
a = S.sample(b, lg, ctl, **kw)
a2 = S.sample(b, lg, ctl, **kw)
b.submit()
S.set_control(dev, ctl, 6)
c = S.sample(b, lg, ctl, **kw)
outs.update(a=a, a2=a2, c=c)
"""
    o, _ = gpu(engine, code, lg=np.tile(lg, (rows, 1)))
    a, a2, c = ids(o["a"]), ids(o["a2"]), ids(o["c"])
    assert np.array_equal(a, a2)                 # same seed and step: same ids
    assert not np.array_equal(a, c)              # next step: fresh draws
    for draw in (a, c):
        assert keep[draw].all(), sorted(set(draw[~keep[draw]].tolist()))
        counts = np.bincount(draw, minlength=V).astype(np.float64)
        exp = q * rows
        big = exp >= 5                          # chi-square over bins expecting >= 5 draws
        stat = ((counts[big] - exp[big]) ** 2 / exp[big]).sum()
        rest = counts[~big & keep].sum() - exp[~big & keep].sum()
        df = max(int(big.sum()) - 1, 1)
        assert stat <= df + 6 * np.sqrt(2 * df) + 10, (stat, df)
        assert abs(rest) <= 6 * np.sqrt(max(exp[~big & keep].sum(), 1)) + 5


def test_hf_warpers_agree_with_reference_mask():
    """hf_keep above is HF's Temperature/TopK/TopP warpers' algorithm (checked against them)."""
    import torch
    from transformers.generation.logits_process import (TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    r = np.random.default_rng(3)
    for temperature, top_k, top_p in DIST_CASES + [(1.0, 50, 0.9)]:
        lg = (r.standard_normal(300) * 2).astype(np.float32)
        x = torch.tensor(lg[None].astype(np.float64))
        ids_ = torch.zeros((1, 1), dtype=torch.long)
        x = TemperatureLogitsWarper(temperature)(ids_, x)
        if top_k:
            x = TopKLogitsWarper(top_k)(ids_, x)
        if top_p < 1:
            x = TopPLogitsWarper(top_p)(ids_, x)
        assert np.array_equal(np.isfinite(x.numpy()[0]), hf_keep(lg, temperature, top_k, top_p))


def test_large_vocab_top_k_top_p_and_replay(engine):
    """V = 152064 (Qwen2 sized): ids stay in HF's allowed set; a recorded graph replays with only
    the step rewritten, and the same step replays the same ids."""
    V, rows = 152064, 2
    lg = (rng.standard_normal((rows, V)) * 2).astype(np.float32)
    lg[:, :40] += 6.0                          # a peaked head, like a real LM
    hist = np.arange(10, dtype=np.uint32)[None].repeat(rows, 0)
    cases = [(0.8, 50, 1.0), (0.8, 0, 0.9), (1.0, 20, 0.5)]
    code = f"""
ctl = S.make_control(dev, {rows}, step=0, counts=[10, 10])
res = {{}}
for ci, (t, k, p) in enumerate({cases}):
    for step in range(4):
        S.set_control(dev, ctl, step, [10, 10])
        outs[f'c{{ci}}s{{step}}'] = S.sample(b, T['lg'], ctl, temperature=t, top_k=k, top_p=p, seed=7)
        b.submit()
# a recorded graph: penalty + sample, replayed for 3 steps, then step 1 again
out = Tensor(dev, ({rows},), 'u32')
asked = []
plain_pipeline = dev.pipeline
dev.pipeline = lambda s, e, c=None: (asked.append(e), plain_pipeline(s, e, c))[1]
S.sample(b, T['lg'], ctl, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.2,
         history=T['hist'], seed=11, out=out)
del dev.pipeline
rec = b.record()
info['recorded_dispatches'] = rec.dispatch_count
info['entries'] = asked
for j, step in enumerate((0, 1, 2, 1)):
    S.set_control(dev, ctl, step)
    rec.replay()
    outs[f'r{{j}}'] = Tensor.from_bytes(dev, ({rows},), await out.to_bytes(), 'u32')
"""
    o, info = gpu(engine, code, lg=lg, hist=hist)
    for ci, (t, k, p) in enumerate(cases):
        keep = [hf_keep(lg[r], t, k, p) for r in range(rows)]
        draws = [ids(o[f"c{ci}s{s}"]) for s in range(4)]
        for d in draws:
            for r in range(rows):
                assert keep[r][d[r]]
        assert len({tuple(d) for d in draws}) > 1
    assert info["recorded_dispatches"] == 2    # the candidates (with the penalty), the draw
    assert info["entries"] == ["sampling_candidates", "sampling_sample"]   # and no penalty pass
    pen = lg.astype(np.float64).copy()
    pen[:, :10] = np.where(pen[:, :10] < 0, pen[:, :10] * 1.2, pen[:, :10] / 1.2)
    rep = {k: ids(v) for k, v in o.items() if k.startswith("r")}
    r0, r1, r2, r1b = rep["r0"], rep["r1"], rep["r2"], rep["r3"]
    assert np.array_equal(r1, r1b)
    assert len({tuple(r0), tuple(r1), tuple(r2)}) > 1
    for d in (r0, r1, r2):
        for r in range(rows):
            assert hf_keep(pen[r], 0.8, 50, 0.9)[d[r]]
