"""The decode's counters advanced inside the sampler's last dispatch (shaders/sampling.wgsl
ADVANCE, py_engine/ops/sampling.fold_control) against their own dispatch
(decode_control.wgsl): shared by tests/unit/test_control_fold_native.py (lavapipe) and
tools/device_checks.py (a real GPU)."""

MODES = {
    "greedy": dict(greedy=True),
    "greedy_penalty": dict(greedy=True, repetition_penalty=1.3),
    "draw": dict(greedy=False, temperature=0.9, top_k=20, top_p=0.9, seed=7),
    "draw_penalty": dict(greedy=False, temperature=1.1, top_k=0, top_p=0.95, seed=3,
                         repetition_penalty=1.2),
    "temp": dict(greedy=False, temperature=0.9, top_k=0, top_p=1.0, seed=4),   # alone
}

STREAMS = """
import struct
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model_local(device, args['folder'])
cfg = SamplingConfig(**args['mode'])

async def u32s(t, n=None):
    data = await t.to_bytes()
    vals = list(struct.unpack(f"<{len(data) // 4}I", data))
    return vals if n is None else vals[:n]

out = {}
try:
    device.fuse_control = False
    gen = Generator(model, cfg, max_tokens=64, group=4)
    free = [t async for t in gen.stream([1, 2, 3], 12)]
    gen.release()
    # a stop inside a group (ids 0 | 1 | 2 3 | 4 5 6 | 7 8 9 10: the prefill's, then the ramp's
    # groups of 1, 2, 3 and 4): the first id of 4, 5, 8 or 9 not seen before it, so the steps
    # after it are undone and re-run (Generator._rollback); else (a model that repeats one id)
    # wherever its value first comes
    inside = [i for i in (5, 4, 8, 9) if free.index(free[i]) == i]
    at = inside[0] if inside else 5
    stop = free[at]
    for fold in (False, True):
        device.fuse_control = fold
        gen = Generator(model, cfg, max_tokens=96, group=4)
        a = [t async for t in gen.stream([1, 2, 3], 12, stop_ids=(stop,))]
        b = [t async for t in gen.stream([5, 6], 9)]
        c = [t async for t in gen.stream([8], 40)]   # past the ring's 16 ids, twice
        out[fold] = {'a': a, 'b': b, 'c': c, 'ctl': await u32s(gen.ctl),
                     'history': await u32s(gen.history, gen.n_history),
                     'pos': await u32s(gen.state.pos), 'step_no': gen.step_no,
                     'n_history': gen.n_history, 'dpt': gen.dispatches_per_token,
                     'copies': sum(1 for c in gen._group_recording(0).commands if c[0] == 1),
                     'shadows': len(gen._shadow[0]), 'group': gen.group}
        gen.release()
    out['free'] = free
    out['at'] = free.index(stop)
finally:
    device.fuse_control = None
model.release()
result = {'plain': out[False], 'fold': out[True], 'free': out['free'], 'at': out['at']}
"""


def check_streams(engine, folder, mode):
    """A stream stopped inside a group and the conversation continued after it, in sampling
    mode `mode` (MODES), with the counters in the sampler and in their own dispatch: the same
    ids, counters, history and positions, one dispatch fewer a token and no copy of each id
    into the ring (the sampler writes it)."""
    r = engine.run(STREAMS, folder=str(folder), mode=MODES[mode])
    plain, fold = r["plain"], r["fold"]
    assert plain["a"] == r["free"][:r["at"] + 1]                      # stopped at the stop id
    if not MODES[mode]["greedy"]:
        # random draws vary: the stop fell inside a group, and a misplaced ring read would
        # show in the ids
        assert r["at"] in (4, 5, 8, 9), r["free"]
        assert len(set(fold["c"])) > 1
    for key in ("a", "b", "c", "ctl", "history", "pos", "step_no", "n_history"):
        assert fold[key] == plain[key], key
    # the device's counters are the host's mirror: every step counted, every id in the history
    assert fold["ctl"] == [fold["step_no"], fold["n_history"]]
    assert fold["history"][:3] == [1, 2, 3] and fold["history"][-len(fold["c"]):] == fold["c"]
    assert fold["dpt"] == plain["dpt"] - 1, (plain["dpt"], fold["dpt"])
    # the counters put each id in the ring, in the sampler or in their own dispatch: a group's
    # only copies are its rollback shadows -- no copy of each step's id, which also ended the
    # compute pass, and none of the logits with a penalty (penalised where they are read)
    assert fold["copies"] == plain["copies"] == fold["shadows"]


ROWS = """
import struct
from py_engine.gpu.tensor import Tensor
from py_engine.ops import sampling
import random
rng = random.Random(5)
V, rows, H = args['V'], 2, 16
logits = Tensor.from_list(device, (rows, V), [rng.uniform(-3, 3) for _ in range(rows * V)])

async def u32s(t):
    data = await t.to_bytes()
    return list(struct.unpack(f"<{len(data) // 4}I", data))

out = {}
try:
    if args['passes']:             # the passes over the row (a CPU adapter's rule is off)
        device.sample_spread = device.sample_passes = True
    for fold in (False, True):
        device.fuse_control = fold
        ctl = sampling.make_control(device, rows, step=4, counts=[2, H])   # row 1's history full
        hist = Tensor.from_list(device, (rows, H), list(range(rows * H)), "u32")
        pos = Tensor.from_list(device, (rows,), [10, 20], "u32")
        ids = Tensor(device, (rows,), "u32")
        batch = device.batch()
        pen = args['mode'].get('repetition_penalty', 1.0) != 1.0
        sampling.sample(batch, logits, ctl, out=ids, then_advance=(hist, pos),
                        history=hist if pen else None, **args['mode'])
        n = batch.dispatch_count
        batch.submit()
        out[fold] = {'ids': await u32s(ids), 'ctl': await u32s(ctl),
                     'hist': await u32s(hist), 'pos': await u32s(pos), 'n': n}
        for t in (ctl, hist, pos, ids):
            t.release()
finally:
    device.fuse_control = device.sample_spread = device.sample_passes = None
logits.release()
result = {'plain': out[False], 'fold': out[True]}
"""


ROW_MODES = {"greedy": dict(MODES["greedy"], repetition_penalty=1.0),
             "draw": dict(MODES["draw"], repetition_penalty=1.0),
             # as passes over the row: top-p alone, and temperature alone with a penalty
             "passes": dict(MODES["draw"], top_k=0, repetition_penalty=1.0),
             "passes_temp": dict(MODES["temp"], repetition_penalty=1.3)}


def check_rows(engine, mode):
    """Two rows sampled directly with then_advance: the same ids and counters either way;
    greedy folds (one dispatch fewer), and so does a draw as passes over the row (modes
    "passes", "passes_temp": top-p alone, temperature alone with a penalty, over 5,000 logits,
    the passes forced on; the step counter was read a dispatch before the last), while a draw
    of two rows in sampling_sample keeps its own dispatch."""
    passes = mode.startswith("passes")
    r = engine.run(ROWS, mode=ROW_MODES[mode], V=5000 if passes else 300, passes=passes)
    plain, fold = r["plain"], r["fold"]
    assert plain["ctl"] == [5, 3, 16]                     # row 1's history had no room
    assert plain["hist"][2] == plain["ids"][0] and plain["pos"] == [11, 21]
    for key in ("ids", "ctl", "hist", "pos"):
        assert fold[key] == plain[key], key
    assert fold["n"] == plain["n"] - (1 if mode == "greedy" or passes else 0)
