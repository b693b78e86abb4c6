"""sampling_sample's kept lists (KEEP_LISTS in shaders/sampling.wgsl) against walking the whole
row: shared by tests/unit/test_sampling_passes_native.py (lavapipe) and tools/device_checks.py
(a real GPU)."""
import numpy as np

RUN = """
import struct
import py_engine.ops.sampling as S
from py_engine.gpu.tensor import Tensor
rows, V = args['rows'], args['V']
# NaN travels as None (JSON has no NaN: the Dawn engine's requests are JSON)
lg = Tensor.from_list(device, (rows, V),
                      [float('nan') if x is None else x for x in args['logits']])
hist = Tensor.from_list(device, (rows, 8), args['hist'], 'u32')
out = {}
probe = Tensor(device, (rows, 2), 'u32')
used = []
try:
    device.sample_passes = args.get('passes')     # None: the rule
    for keep in (False, True):
        device.sample_keep = keep
        got = []
        for step in range(args['steps']):
            ctl = S.make_control(device, rows, step=step, counts=[5] * rows)
            ids = Tensor(device, (rows,), 'u32')
            batch = device.batch()
            kw = dict(args['kw'])
            if kw.get('repetition_penalty', 1.0) != 1.0:
                kw['history'] = hist
            S.sample(batch, lg, ctl, out=ids, probe=probe if keep else None, **kw)
            batch.submit()
            got.append(list(struct.unpack(f'<{rows}I', await ids.to_bytes())))
            if keep:
                used.append(list(struct.unpack(f'<{2 * rows}I', await probe.to_bytes()))[::2])
            ids.release()
            ctl.release()
        out[keep] = got
finally:
    device.sample_keep = None
    device.sample_passes = None
lg.release()
hist.release()
probe.release()
result = {'rows': out[False], 'lists': out[True], 'used': used}
"""

SETTINGS = [
    dict(temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=1),  # the page's
    dict(temperature=0.7, top_k=5, top_p=1.0, seed=3),
    dict(temperature=0.9, top_k=17, top_p=0.99, seed=6),
    dict(temperature=0.9, top_k=2000, top_p=0.8, seed=5),      # more than the lists hold
]


def check_kept_lists(engine, kw, V, rows):
    """Eight draws (steps 0-7) from the same logits with the lists and without: the same ids;
    the lists used where every thread's fit (not at k = 2000); a NaN logit never drawn; the
    draws move with the step."""
    k = kw["top_k"]
    rng = np.random.default_rng(V + k)
    lg = (rng.standard_normal((rows, V)) * 3).astype(np.float32)
    lg[0, :50:3] = lg[0].max()                  # 17 tied maxima: ties at k = 5
    last = lg[-1]
    last[4] = np.nan
    kth = np.sort(last[~np.isnan(last)])[-k]
    last[1000::997] = kth                       # ties at the last row's k-th value
    r = engine.run(RUN, passes=False, rows=rows, V=V, steps=8, kw=kw,
                   logits=[None if np.isnan(x) else float(x) for x in lg.ravel()],
                   hist=[int(i) for i in rng.integers(0, V, rows * 8)])
    assert r["lists"] == r["rows"]
    used = {u for step in r["used"] for u in step}
    assert used == ({0} if k > 8 * 128 else {1}), used       # KEPT values a thread, 128 threads
    assert all(step[-1] != 4 for step in r["rows"])         # a NaN logit is never drawn
    assert len({tuple(step) for step in r["rows"]}) > 1     # the draws move with the step


def _replaced(text, old, new):
    assert old in text, old
    return text.replace(old, new)


SPREAD_RUN = RUN
for _old, _new in (
        ("for keep in (False, True):\n        device.sample_keep = keep",
         "for keep in (False, True):\n        device.sample_spread = keep"),
        ("device.sample_keep = None", "device.sample_spread = None"),
        # the spread arm's penalised copy starts as 7s: the whole-row walk of a row whose slice
        # overflowed reads only what sampling_candidates wrote there
        ("S.sample(batch, lg, ctl, out=ids, probe=probe if keep else None, **kw)",
         "S.sample(batch, lg, ctl, out=ids, probe=probe if keep else None,\n"
         "                     scratch=poison if keep else None, **kw)"),
        ("probe = Tensor(device, (rows, 2), 'u32')",
         "probe = Tensor(device, (rows, 2), 'u32')\npoison = Tensor.from_list(device, (rows, V), "
         "[7.0] * (rows * V))"),
        ("probe.release()", "probe.release()\npoison.release()"),
        # the probe's second word (which path each row took); its first on the passes: the
        # bits of the row's max x the draw's scores were taken from
        ("used.append(list(struct.unpack(f'<{2 * rows}I', await probe.to_bytes()))[::2])",
         "pr = list(struct.unpack(f'<{2 * rows}I', await probe.to_bytes()))\n"
         "                used.append(pr[1::2])\n"
         "                firsts.append(pr[::2])"),
        ("used = []", "used = []\nfirsts = []"),
        ("'used': used}", "'used': used, 'firsts': firsts}")):
    SPREAD_RUN = _replaced(SPREAD_RUN, _old, _new)

SPREAD_SETTINGS = SETTINGS + [
    dict(temperature=1.1, top_k=128, top_p=0.9, seed=8),
    # row 0's first slice overflows even with the penalty on three of its tied maxima: the
    # whole-row walk reads the penalised copy sampling_candidates wrote
    dict(temperature=0.8, top_k=5, top_p=0.9, repetition_penalty=1.3, seed=9),
]


def setting_name(kw):
    """A spread setting's name in test ids and device-check names: k, and -pen with a penalty."""
    return f"k{kw['top_k']}" + ("-pen" if kw.get("repetition_penalty", 1.0) != 1.0 else "")


def check_spread(engine, kw, V, rows):
    """Eight draws with top-k spread over the GPU (sampling_candidates, then sampling_sample
    over the candidates: py_engine/ops/sampling.spread_slots) and with sampling_sample alone
    (one workgroup a row, its kept lists): the same ids. The candidates are used wherever
    every slice's values at or above its own k-th largest fit its slots -- not in row 0 at
    k = 5 (27 tied maxima in one slice, 24 with the penalty, 16 slots: that row is walked
    whole); at k = 2000 (past SPREAD_MAX_K) the draw runs as passes over the row (check_passes)
    from TOPK_PASSES_FROM logits, and walks it below.
    With a penalty, each row's top three tokens are in its history."""
    k = kw["top_k"]
    rng = np.random.default_rng(V + k)
    lg = (rng.standard_normal((rows, V)) * 3).astype(np.float32)
    lg[0, :80:3] = lg[0].max()                  # 27 tied maxima in row 0's first slice
    last = lg[-1]
    last[4] = np.nan
    kth = np.sort(last[~np.isnan(last)])[-k]
    last[200::197 if V < 5000 else 997] = kth   # ties at the last row's k-th value
    hist = rng.integers(0, V, (rows, 8))
    for row in range(rows):                     # the penalty (where on) hits the row's top
        hist[row, :3] = np.argsort(np.nan_to_num(lg[row], nan=-np.inf))[-3:]
    r = engine.run(SPREAD_RUN, rows=rows, V=V, steps=8, kw=kw,
                   logits=[None if np.isnan(x) else float(x) for x in lg.ravel()],
                   hist=[int(i) for i in hist.ravel()])
    assert r["lists"] == r["rows"]
    # k past the candidates' 128: passes over the row (2) from TOPK_PASSES_FROM logits, else
    # walked whole (0); row 0 at k = 5: walked whole (0)
    from py_engine.ops.sampling import TOPK_PASSES_FROM
    wide = 2 if V >= TOPK_PASSES_FROM else 0
    want = [wide if k > 128 else 0 if (k == 5 and row == 0) else 1 for row in range(rows)]
    assert all(step == want for step in r["used"]), (r["used"][0], want)
    assert all(step[-1] != 4 for step in r["rows"])         # a NaN logit is never drawn
    assert len({tuple(step) for step in r["rows"]}) > 1     # the draws move with the step


PENALTY_RUN = """
import struct
import py_engine.ops.sampling as S
from py_engine.gpu.tensor import Tensor
rows, V = args['rows'], args['V']
lg = Tensor.from_list(device, (rows, V), args['logits'])
hist = Tensor.from_list(device, (rows, 8), args['hist'], 'u32')
ctl = S.make_control(device, rows, step=0, counts=[8] * rows)
ids = Tensor(device, (rows,), 'u32')
scratch = Tensor(device, (rows, V))
spread = Tensor(device, (rows, V))
viap = Tensor(device, (rows, V))
batch = device.batch()
S.sample(batch, lg, ctl, out=ids, greedy=True, repetition_penalty=args['pen'], history=hist)
try:
    # top-p alone walking the row (sampling_penalise's scratch), then over the slices'
    # candidates where the device spreads it (sampling_candidates' copy), then as passes over
    # the row (the first pass's copy)
    for on, passes, sc in ((False, False, scratch), (True, False, spread), (True, True, viap)):
        device.sample_spread = on
        device.sample_passes = passes
        S.sample(batch, lg, ctl, top_p=0.9, repetition_penalty=args['pen'], history=hist,
                 scratch=sc)
finally:
    device.sample_spread = None
    device.sample_passes = None
batch.submit()
result = {'greedy': list(struct.unpack(f'<{rows}I', await ids.to_bytes())),
          'row': list(struct.unpack(f'<{rows * V}f', await scratch.to_bytes())),
          'spread': list(struct.unpack(f'<{rows * V}f', await spread.to_bytes())),
          'passes': list(struct.unpack(f'<{rows * V}f', await viap.to_bytes()))}
for t in (lg, hist, ctl, ids, scratch, spread, viap):
    t.release()
"""


def _penalised(lg, hist, pen):
    """lg [rows, V] f32 with each distinct token of row i's history hist[i] penalised as the
    kernels compute HF's penalty: l * pen below 0, l * (1 / pen) above, 1 / pen packed as f32
    (ops/sampling.sample's params)."""
    inv = np.float32(1.0 / pen)
    out = lg.copy()
    for i in range(lg.shape[0]):
        for t in set(hist[i].tolist()):
            v = lg[i, t]
            out[i, t] = v * np.float32(pen) if v < 0 else v * inv
    return out


def check_penalty(engine, V, rows, pen=3.0):
    """The repetition penalty where the row is first read (penalise_slice): greedy's slices
    (sampling_greedy_part, several a workgroup past 256 slices) take the penalised argmax, and
    the row a draw without top-k walks (sampling_penalise's scratch; with top-p alone spread,
    sampling_candidates' copy, and the first pass's copy where it runs as passes) is the logits with every history token's penalised -- l * pen
    below 0, l * f32(1 / pen) above, as the kernels compute HF's l / pen -- bit for bit. Each row's two largest logits are in its history and
    its largest after the penalty is not, at its far end."""
    rng = np.random.default_rng(V + rows)
    lg = rng.uniform(-1, 1, (rows, V)).astype(np.float32)
    hist = rng.integers(0, V, (rows, 8)).astype(np.uint32)
    for r in range(rows):
        hist[r, :2] = (V // 3 + r, V - 2 - r)
        lg[r, hist[r, 0]], lg[r, hist[r, 1]] = 9.0, 8.0
        lg[r, 7] = -5.0
        hist[r, 2] = 7                          # a negative logit: times pen
    lg[:, V - 1] = 3.5                          # above 9/3 = 3.0: the penalised argmax
    r = engine.run(PENALTY_RUN, rows=rows, V=V, pen=pen,
                   logits=[float(x) for x in lg.ravel()],
                   hist=[int(i) for i in hist.ravel()])
    ref = _penalised(lg, hist, pen)
    for key in ("row", "spread", "passes"):
        got = np.array(r[key], np.float32).reshape(rows, V)
        assert np.array_equal(got, ref), (key, np.argwhere(got != ref)[:5])
    assert r["greedy"] == ref.argmax(1).tolist() == [V - 1] * rows


TOPP_SETTINGS = [
    dict(temperature=0.8, top_k=0, top_p=0.9, seed=11),
    dict(temperature=1.0, top_k=0, top_p=0.95, repetition_penalty=1.3, seed=12),
]


def _topp_rows(rng, V, kinds):
    """Logit rows for check_topp_alone by kind (x = l / temperature in the draw)."""
    lg = (rng.standard_normal((len(kinds), V)) * 8).astype(np.float32)
    for i, kind in enumerate(kinds):
        row = lg[i]
        if kind == "flat":
            row *= 0.03
        elif kind == "nan":
            row[4] = np.nan
            row[5] = np.nanmax(row) + 1.0      # next to the NaN: often drawn
        elif kind == "overflow":
            row[:150] = row.max()              # 150 ties within the first slice
        elif kind == "below":
            # 128 values near 10 and 30 near 9.5 in slice 0, 120 near 9 in slice 2, the rest
            # near -10: the candidates alone reach the top-p mass within the 9s, but the set
            # takes the 9.5s, which are below slice 0's 128th largest (not candidates)
            row[:] = -10 + rng.uniform(0, 0.01, V)
            sl = 1024 if V > 4096 else 256
            row[:128] = 10 + rng.uniform(0, 0.01, 128)
            row[128:158] = 9.5 + rng.uniform(0, 0.01, 30)
            row[2 * sl:2 * sl + 120] = 9 + rng.uniform(0, 0.01, 120)
    return lg


# SPREAD_RUN, with args['passes'] choosing the passes over the row (True) or not (False)
TOPP_RUN = SPREAD_RUN


def check_topp_alone(engine, kw, V, rows):
    """Top-p without top-k over the slices' top-128 candidates (TOP-P ALONE in
    shaders/sampling.wgsl: the row's mass from the slices' own, the threshold among the
    candidates, kept where every value at or above it is a candidate) and one workgroup walking
    the row: the same ids, 32 draws. Rows: peaked (its top-p set a few tokens: the candidates
    are used), flat (its set reaches below the slices' candidates: the row is walked after the
    try), one whose set takes values just below one slice's candidates while the candidates
    alone would reach the mass further down (walked whole); with five rows also peaked with a
    NaN logit (never drawn) and 150 tied maxima in one slice (past its slots: walked whole).
    With a penalty, each row's top three tokens are in its history (the walk reads the
    penalised copy the candidates kernel wrote: the spread arm's scratch starts as 7s)."""
    kinds, r, _, _ = _draw_topp_rows(engine, kw, V, rows, V + 7, passes=False)
    want = [int(k in ("peaked", "nan")) for k in kinds]
    assert all(step == want for step in r["used"]), (r["used"][0], want)
    _assert_topp_rows(kinds, r, below=True)


def _draw_topp_rows(engine, kw, V, rows, seed, passes):
    """32 draws on _topp_rows' first `rows` kinds, each row's top three tokens in its history,
    with the passes on or off (TOPP_RUN) -> (kinds, result, logits, history); the two arms drew
    the same ids."""
    kinds = ["peaked", "flat", "below", "nan", "overflow"][:rows]
    rng = np.random.default_rng(seed)
    lg = _topp_rows(rng, V, kinds)
    hist = rng.integers(0, V, (rows, 8))
    for row in range(rows):
        hist[row, :3] = np.argsort(np.nan_to_num(lg[row], nan=-np.inf))[-3:]
    r = engine.run(TOPP_RUN, rows=rows, V=V, steps=32, kw=kw, passes=passes,
                   logits=[None if np.isnan(x) else float(x) for x in lg.ravel()],
                   hist=[int(i) for i in hist.ravel()])
    assert r["lists"] == r["rows"]
    return kinds, r, lg, hist


def _row_max_x(lg, hist, kw):
    """Each row's max of x = l' * f32(1 / temperature) over its non-NaN logits, l' the logit
    penalised (_penalised) where its token is among the history's first 5 (RUN's count): the
    sampler's arithmetic in float32."""
    pen = kw.get("repetition_penalty", 1.0)
    rows = _penalised(lg, hist[:, :5], pen) if pen != 1.0 else lg
    return np.nanmax(rows * np.float32(1.0 / kw["temperature"]), axis=1)


def _assert_topp_rows(kinds, r, below):
    """What the draws on those rows must show: a NaN never drawn, draws moving with the step, a
    wide set on the flat row, and (below) the 9.5s in the just-below row's set."""
    if "nan" in kinds:
        assert all(step[kinds.index("nan")] != 4 for step in r["rows"])   # NaN never drawn
    assert len({tuple(step) for step in r["rows"]}) > 1     # the draws move with the step
    assert len({step[1] for step in r["rows"]}) > 16        # the flat row: a wide set
    if below:
        got = {step[2] for step in r["rows"]}               # the 9.5s are in its set
        assert any(128 <= i < 158 for i in got), sorted(got)[:10]


PASSES_SETTINGS = TOPP_SETTINGS + [
    dict(temperature=0.9, top_k=2000, top_p=0.8, seed=5),          # top-k past the candidates
    dict(temperature=0.7, top_k=300, top_p=1.0, repetition_penalty=1.2, seed=4),   # top-k alone
    dict(temperature=0.9, top_k=0, top_p=1.0, repetition_penalty=1.2, seed=13),   # neither
    dict(temperature=1.3, top_k=0, top_p=1.0, seed=14),
]


def check_passes(engine, kw, V, rows):
    """A draw as passes over the whole row spread over the GPU (TOP-P PASSES in
    shaders/sampling.wgsl: each digit pass of the thresholds -- top-k's four when k is past the
    candidates' 128, top-p's eight -- a dispatch of one workgroup a slice, every slice's draw,
    the best of them; plain temperature: each slice's max, then the draw) against one
    workgroup walking the row: the same ids, 32 draws, on the
    rows of check_topp_alone -- peaked, flat (a set of most of the row), a set reaching just
    below one slice's top 128, a NaN logit (never drawn), 150 tied maxima in one slice -- with
    and without a penalty (the walk reads the penalised copy the first pass wrote: the arm's
    scratch starts as 7s); every row takes the passes (the probe's 2), and its draw takes its
    scores from the row's max (the probe's first word)."""
    kinds, r, lg, hist = _draw_topp_rows(engine, kw, V, rows, V + 11, passes=True)
    assert all(step == [2] * rows for step in r["used"]), r["used"][0]
    _assert_topp_rows(kinds, r, below=kw["top_k"] == 0 and kw["top_p"] < 1.0)
    # the row max the scores were taken from: the max of x = penalised(l) * (1 / temperature)
    # over the row's numbers (a shift of every score, so the ids alone would hide a wrong one
    # unless it moved their rounding)
    want = [int(np.float32(m).view(np.uint32)) for m in _row_max_x(lg, hist, kw)]
    assert all(step == want for step in r["firsts"]), (r["firsts"][0], want)


EDGES_RUN = """
import struct
import py_engine.ops.sampling as S
from py_engine.gpu.tensor import Tensor
rows, V = args['rows'], args['V']
lg = Tensor.from_list(device, (rows, V),
                      [float('nan') if x is None else x for x in args['logits']])
out = {}
try:
    device.sample_spread = True
    for passes in (False, True):
        device.sample_passes = passes
        got = []
        for step in range(args['steps']):
            ctl = S.make_control(device, rows, step=step)
            ids = Tensor(device, (rows,), 'u32')
            batch = device.batch()
            S.sample(batch, lg, ctl, out=ids, **args['kw'])
            batch.submit()
            got.append(list(struct.unpack(f'<{rows}I', await ids.to_bytes())))
            ids.release()
            ctl.release()
        out[passes] = got
finally:
    device.sample_spread = None
    device.sample_passes = None
lg.release()
result = {'walk': out[False], 'passes': out[True]}
"""


def check_passes_edges(engine, V):
    """The passes at the thresholds' edges, against one workgroup walking the row, 32 draws:
    top-k 299 on a row of 299 values at 1.0 and 60 at 0.5 (the k-th largest is a 1.0: no 0.5
    is drawn; a threshold one rank low would take all the 0.5s, drawn ~1 in 9) and on a row of
    only 200 values besides NaN (fewer than k: every value kept); top-p 0 (HF keeps the top
    token: always the argmax)."""
    rng = np.random.default_rng(V)
    tie = np.full(V, -30.0, np.float32)
    tie[rng.choice(V, 359, replace=False)] = [1.0] * 299 + [0.5] * 60
    halves = set(np.flatnonzero(tie == 0.5).tolist())
    few = np.full(V, np.nan, np.float32)
    few[rng.choice(V, 200, replace=False)] = rng.standard_normal(200).astype(np.float32)
    lg = np.stack([tie, few])
    r = engine.run(EDGES_RUN, rows=2, V=V, steps=32, kw=dict(temperature=1.0, top_k=299, seed=2),
                   logits=[None if np.isnan(x) else float(x) for x in lg.ravel()])
    assert r["passes"] == r["walk"]
    assert not halves & {step[0] for step in r["passes"]}
    assert len({step[1] for step in r["passes"]}) > 16                 # the 200 are all kept
    assert all(not np.isnan(few[step[1]]) for step in r["passes"])
    top = (rng.standard_normal((2, V)) * 0.01).astype(np.float32)     # a flat row: p 0 keeps 1
    r = engine.run(EDGES_RUN, rows=2, V=V, steps=8, kw=dict(temperature=1.0, top_p=0.0, seed=3),
                   logits=[float(x) for x in top.ravel()])
    assert r["passes"] == r["walk"] == [top.argmax(1).tolist()] * 8
