"""Next-token sampling on the GPU (shaders/sampling.wgsl): logits in, token ids (u32) out.

Shapes:
    logits   [V] or [rows, V] f32 (a Tensor, or a Cols view such as the last position's row)
    ctl      [1 + rows] u32: ctl[0] = step (the RNG counter), ctl[1 + r] = history length of row r.
             The caller updates it with `set_control` (one writeBuffer) between steps, so a
             recorded decode graph replays without re-encoding.
    history  [rows, H] or [H] u32 token ids (the first ctl[1 + r] of row r are used)
    out      [rows] u32 chosen ids

Semantics are HuggingFace generate's: repetition penalty (l < 0 ? l * pen : l / pen, once per
distinct token of the history), then greedy argmax (lowest index on ties), or temperature ->
top-k (ties at the threshold kept) -> top-p (HF TopPLogitsWarper: keep the smallest set of the
largest probabilities whose mass reaches p; the top token is always kept) -> a draw from the
renormalised softmax. The draw is Gumbel-max with a counter-based hash of (seed, step, row, v):
the same seed and step give the same ids on any run.

Dispatches per call: greedy 2 (its first penalises the slices it reads); a draw 1 (+1 with a
repetition penalty: sampling_penalise writes the penalised row the draw walks), or -- top-k up
to SPREAD_MAX_K over at least two slices of the row, `spread_slots` -- 2: each slice's
candidates (penalised there), then the draw over them. Top-p alone where it spreads: 10, the
threshold's eight digit passes over the whole row as dispatches of one workgroup a slice, each
slice's draw, the best of them (`sample_passes`: from PASSES_FROM logits; below, 2 over the
slices' top SPREAD_MAX_K where the top-p set stays among them, else over the row); top-k past
SPREAD_MAX_K likewise from TOPK_PASSES_FROM, its four digit passes before top-p's (6
dispatches, 14 with top-p); plain temperature (neither) likewise from PASSES_FROM, 3: each
slice's max, each slice's draw, the best of them. Below those rows they walk it in one
workgroup, faster there. The penalty is one function
(penalise_slice) wherever the row is first read; no buffer copy of the logits. With
`then_advance` the decode's counters move in the last of them (decode_control.wgsl's work:
one dispatch fewer a decoded token), or in a dispatch of their own where they cannot (several
rows drawn by sampling_sample: `fold_control`). V up to the binding limit
works (top-k/top-p are radix selections, not sorts: at most 15 passes over what one 128-thread
workgroup per row walks -- the row, or its top-k candidates).
"""
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import params
from py_engine.ops.conv1d import rw_dummy, view

GREEDY, PENALISED, TOP_K, TOP_P = 1, 2, 4, 8


def make_control(device, rows=1, step=0, counts=None):
    """A ctl buffer [step, count_0, ..., count_{rows-1}] (u32)."""
    counts = list(counts) if counts is not None else [0] * rows
    if len(counts) != rows:
        raise ValueError(f"{len(counts)} history counts for {rows} rows")
    return Tensor.from_list(device, (1 + rows,), [int(step)] + [int(c) for c in counts], "u32")


def set_control(device, ctl, step, counts=None):
    """Write the step counter (and, if given, the history lengths) into ctl."""
    vals = [int(step)] + ([int(c) for c in counts] if counts is not None else [])
    device.write(ctl.buffer, struct.pack(f"<{len(vals)}I", *vals), ctl.offset)


def fold_control(device, rows, ends_in_final):
    """Whether sample(..., then_advance=...) advances the counters in its own last dispatch:
    where that is sampling_greedy_final (`ends_in_final`: greedy, and the passes, whose draw
    read the step counter a dispatch earlier), which reads no counter for its choice (under
    ADVANCE only those it moves: its own row's, and the step counter in row 0's), or for one row
    (sampling_sample reads the step counter for its draw, and with several rows one row's
    workgroup could move it while another still draws). `device.fuse_control` (tests), else
    MAMBAWEB_FUSE_CONTROL=1|0 (bench variants)."""
    from py_engine.gpu.settings import choose
    return (ends_in_final or rows == 1) and choose(device, "fuse_control",
                                                   "MAMBAWEB_FUSE_CONTROL", "1", "0",
                                                   lambda: True)


def keep_lists(device):
    """Whether sampling_sample's passes after top-k walk each thread's list of the values at or
    above its threshold instead of the whole row (KEEP_LISTS in shaders/sampling.wgsl: the
    same ids; 6 passes over the row instead of 15 with top-k and top-p). `device.sample_keep`
    (tests), else MAMBAWEB_SAMPLE_KEEP=1|0 (bench variants), else on."""
    from py_engine.gpu.settings import choose
    return choose(device, "sample_keep", "MAMBAWEB_SAMPLE_KEEP", "1", "0", lambda: True)


SPREAD_MAX_K = 128   # the largest top-k whose candidates spread over the GPU (spread_slots)


def spread_slots(device, V, top_k, wg, alone=False):
    """KC, the candidate slots a slice of 8 * wg logits when a draw's top-k spreads over the
    GPU (sampling_candidates in shaders/sampling.wgsl, then sampling_sample over the
    candidates), else 0: top-k on, k at most SPREAD_MAX_K, at least two slices. KC is k and
    eight slots for ties, rounded up to 8. `device.sample_spread` (tests), else
    MAMBAWEB_SAMPLE_SPREAD=1|0 (bench variants), else on. Top-p alone (`alone`) asks with
    top_k = SPREAD_MAX_K (`sample`: its candidates hold the top-p set where that set stays
    within them, TOP-P ALONE in the shader), by rule only on a GPU, not a CPU adapter: there
    the slices' kernel is work added, not spread (SwiftShader, V = 5,000 through Dawn: 13.7 ms
    a draw against 6.3 walking the row)."""
    from py_engine.gpu.settings import choose
    if not (0 < top_k <= SPREAD_MAX_K and V >= 2 * 8 * wg and top_k < V):
        return 0
    if alone and wg < 128:      # 136 slots of a 256-value slice: half the row, little spread
        return 0
    rule = (lambda: not device.info.get("is_fallback")) if alone else (lambda: True)
    if not choose(device, "sample_spread", "MAMBAWEB_SAMPLE_SPREAD", "1", "0", rule):
        return 0
    return -(-(top_k + 8) // 8) * 8


# The rows from which the passes are the rule (sample_passes). A draw's ms on the H200 through
# Dawn (`python -m tools.bench_topp --V V [--top-p 1 | --top-k 300]`, 200 draws of the page's
# settings, peaked / flat rows), passes against one workgroup walking the row:
#   temperature alone  5,000: 0.057 / 0.046 against 0.039 / 0.031;  8,192: 0.056 / 0.054
#                      against 0.048 / 0.046;  16,384: 0.053 / 0.042 against 0.067 / 0.073;
#                      32,000: 0.058 / 0.053 against 0.124 / 0.123
#   top-p alone        8,192: 0.171 / 0.172 against 0.131 / 0.137 (the candidates 0.091 /
#                      0.165);  16,384: 0.178 / 0.174 against 0.205 / 0.215;  32,000: 0.177 /
#                      0.185 against 0.355 / 0.390
#   top-k 300 (+ top-p)  16,384: 0.224 / 0.249 against 0.155 / 0.153;  32,000: 0.277 / 0.287
#                      against 0.240 / 0.233;  50,280: 0.275 / 0.272 against 0.422 / 0.422
# (2026-12-04). The passes cost about the same at any size (their dispatches), the walk grows
# with the row.
PASSES_FROM = 16384           # temperature alone, top-p alone
TOPK_PASSES_FROM = 40000      # top-k past SPREAD_MAX_K (four more passes), with or without top-p


def sample_passes(device, V=None, top_k=False):
    """Whether a draw that would walk the row in one workgroup -- top-p alone, top-k past
    SPREAD_MAX_K, or plain temperature (neither) -- runs instead as passes over the whole row
    spread over the GPU, where the device spreads top-p alone (spread_slots(..., alone=True)):
    TOP-P PASSES in shaders/sampling.wgsl, the thresholds' digit passes (top-k's four, top-p's
    eight; with neither, each slice's max) as dispatches of one workgroup a slice, each slice's
    draw, the best of the slices. Otherwise top-p alone goes over the slices' top-128
    candidates with the one-workgroup walk as fallback (TOP-P ALONE) and a wide top-k or plain
    temperature walks the row. `device.sample_passes` (tests), else MAMBAWEB_SAMPLE_PASSES=1|0
    (bench variants), else from V = PASSES_FROM logits (TOPK_PASSES_FROM with a wide `top_k`),
    where they measured faster than the walk."""
    from py_engine.gpu.settings import choose
    return choose(device, "sample_passes", "MAMBAWEB_SAMPLE_PASSES", "1", "0",
                  lambda: V is None or V >= (TOPK_PASSES_FROM if top_k else PASSES_FROM))


def sample(batch, logits, ctl=None, *, temperature=1.0, top_k=0, top_p=1.0,
           repetition_penalty=1.0, history=None, seed=0, greedy=False, out=None, scratch=None,
           wg=None, then_advance=None, probe=None):
    """-> out [rows] u32 token ids (see the module doc). greedy (or temperature <= 0): argmax.

    ctl: control buffer from `make_control` (None: a shared one with step 0, no history).
    scratch: [rows, V] f32 for the penalised row a draw walks (default: pooled, released after
    recording; pass your own when the batch is recorded for replay, so the pool cannot hand it
    elsewhere). Greedy needs none.
    wg: threads per row (default 32 for V <= 4096, else 128).
    then_advance: (history, pos) or (history, pos, ring) -- then `advance(batch, out, ctl,
    history, pos)`, folded into the sampler's last dispatch where fold_control allows (the same
    writes). ring (one row): u32 [2R]; the id of step s (the step counter before
    it moves) also goes to ring[s % R] and ring[s % R + R].
    probe (tests): u32 [rows, 2]; a draw (not greedy) writes (1 if its passes after top-k
    walked the kept lists else 0, 1 if they walked the spread candidates else 0) per row, or
    (the bits of the row's max x = l / temperature the draw's scores are taken from, 2) where
    it ran as passes over the row (`sample_passes`).
    """
    dev = batch.device
    V = logits.shape[-1]
    rows = 1 if len(logits.shape) == 1 else logits.shape[0]
    if len(logits.shape) > 2:
        raise ValueError(f"logits must be [V] or [rows, V], got {list(logits.shape)}")
    if out is None:
        out = Tensor(dev, (rows,), "u32")
    elif out.numel < rows:
        raise ValueError(f"out holds {out.numel} ids, need {rows}")
    if ctl is None:
        if history is not None:
            raise ValueError("a history needs a ctl buffer holding its length (make_control)")
        cache = dev.__dict__.setdefault("_sampling_ctl", {})   # step 0, no history; reused
        ctl = cache.get(rows) or cache.setdefault(rows, make_control(dev, rows))
    greedy = greedy or temperature <= 0
    if not repetition_penalty >= 1e-30:
        raise ValueError(f"repetition_penalty must be at least 1e-30 (1 means none), got "
                         f"{repetition_penalty!r}")
    if not greedy and not temperature >= 1e-30:
        raise ValueError(f"temperature {temperature!r} is too small to sample with: use 0 for "
                         "greedy decoding")
    if wg is not None and wg not in (32, 64, 128, 256):
        raise ValueError(f"wg (threads a row) must be 32, 64, 128 or 256, got {wg!r}")
    penalised = repetition_penalty != 1.0 and history is not None
    # PENALISED: sampling_sample reads the penalised row in scratch (greedy penalises its own
    # slices instead: PENALISE in _greedy)
    flags = (GREEDY if greedy else 0) | (PENALISED if penalised and not greedy else 0)
    if not greedy and 0 < top_k < V:
        flags |= TOP_K
    if not greedy and top_p < 1.0:
        flags |= TOP_P
    lb, loff, lstr = view(logits)
    if len(logits.shape) == 1:
        lstr = V
    if then_advance is not None and history is not None and then_advance[0] is not history:
        raise ValueError("then_advance's history must be the one the penalty reads")
    adv_hist, adv_pos, ring = (tuple(then_advance) + (None,))[:3] if then_advance is not None \
        else (None, None, None)
    wg = wg if wg else (32 if V <= 4096 else 128)
    # top-p alone: the slices' top SPREAD_MAX_K as candidates, and their masses (SLICE_Z)
    alone = not greedy and (flags & (TOP_K | TOP_P)) == TOP_P
    # a draw that would walk the row in one workgroup -- top-p alone, a top-k too wide for
    # candidates, plain temperature -- as passes over the row where they spread and pay
    passes = not greedy and (alone or not flags & (TOP_K | TOP_P) or
                             (flags & TOP_K and top_k > SPREAD_MAX_K)) and \
        sample_passes(dev, V, bool(flags & TOP_K)) and \
        spread_slots(dev, V, SPREAD_MAX_K, wg, alone=True) > 0
    folded = then_advance is not None and fold_control(dev, rows, greedy or passes)
    if ring is not None and (rows != 1 or ring.numel % 2):
        raise ValueError(f"a ring of sampled ids needs one row and an even length, got {rows} "
                         f"rows and {ring.numel} entries")
    ring_len = ring.numel // 2 if folded and ring is not None else 0
    hist = history if history is not None else adv_hist if folded else None
    H = hist.shape[-1] if hist is not None else 0
    npos = adv_pos.numel if folded and adv_pos is not None else 0
    cand_k = SPREAD_MAX_K if alone and not passes else int(top_k)
    kc = 0 if greedy or passes or not flags & (TOP_K | TOP_P) else \
        spread_slots(dev, V, cand_k, wg, alone=bool(alone))
    sp = -(-V // (8 * wg)) if kc or passes else 0    # slices of the row (Params._p0)
    temp = float(temperature if temperature > 0 else 1.0)
    each = (V, rows, flags, cand_k, float(top_p), temp, float(repetition_penalty),
            int(seed) & 0xFFFFFFFF, H, loff, lstr, sp, npos, ring_len,
            1.0 / temp, 1.0 / float(repetition_penalty))   # x = l * (1 / t): sampling.wgsl
    u = dev.uniform(params(*each, 0))
    # what the last dispatch binds at 2 (ctl), 3 (history), 7 (positions) and 8 (the ring):
    # scratch buffers where it does not advance (no two writable bindings may share one)
    tail = {"constants": {"ADVANCE": int(folded)},
            "ctl": ctl.binding if folded else rw_dummy(dev, 1),
            "hist": adv_hist.binding if folded else rw_dummy(dev, 2),
            "pos": adv_pos.binding if folded and adv_pos is not None else rw_dummy(dev, 3),
            "ring": ring.binding if ring_len else rw_dummy(dev, 4)}
    own = None
    if penalised and scratch is None and not greedy:   # the penalised row the later reads see
        own = scratch = Tensor(dev, (rows, V))
    if penalised and not greedy and not kc and not passes:   # the draw walks the row: penalise it
        batch.run("sampling", "sampling_penalise",
                  [u, lb, ctl.binding, history.binding, scratch.binding], -(-V // (8 * wg)), rows,
                  constants={"WG": wg})
    if greedy:
        _greedy(batch, u, lb, ctl, history if penalised else None, out, rows, V, H, loff, lstr,
                flags, wg, tail, npos, ring_len)
    elif passes:
        pen = [ctl.binding, history.binding if penalised else rw_dummy(dev, 2),
               scratch.binding if penalised else rw_dummy(dev)]
        _passes(batch, each, lb, pen, out, rows, sp, wg, penalised, tail, probe)
    else:
        sb = scratch.binding if penalised else rw_dummy(dev)
        cand = None
        if kc:                    # the row's top-k candidates, one workgroup per slice
            # [rows, SP, KC] candidates, each slice's (count, threshold), (max, mass), probe
            cand = Tensor(dev, (rows * sp * (kc + 2) + (rows if probe is not None else 0), 2),
                          "u32")
            # bindings 2 and 3 (read only with PENALISE, but always part of the layout)
            pen = [ctl.binding, history.binding if penalised else rw_dummy(dev, 2)]
            batch.run("sampling", "sampling_candidates",
                      [u, lb] + pen + [sb, None, cand.binding], sp, rows,
                      constants={"WG": wg, "KC": kc, "PENALISE": int(penalised),
                                 "SLICE_Z": int(bool(alone))})
        # sampling_sample reads the real ctl (its draw's step) whether or not it advances it
        batch.run("sampling", "sampling_sample",
                  [u, lb, ctl.binding, tail["hist"], sb, out.binding,
                   cand.binding if cand is not None else
                   probe.binding if probe is not None else rw_dummy(dev, 5),
                   tail["pos"], tail["ring"]],
                  rows, constants={"WG": wg, "KEEP_LISTS": int(keep_lists(dev)),
                                   "PROBE": int(probe is not None), "SPREAD": int(bool(kc)),
                                   "KC": kc or 8, **tail["constants"]})
        if cand is not None:
            if probe is not None:   # PROBE wrote after the candidates, counts and masses
                at = cand.offset + rows * sp * (kc + 2) * 8
                batch.copy(cand.buffer, at, probe.buffer, probe.offset, rows * 8)
            cand.release()        # reused only after these dispatches in queue order
    if own is not None:
        own.release()
    if then_advance is not None and not folded:
        advance(batch, out, ctl, adv_hist, adv_pos, ring)
    return out



def _passes(batch, each, lb, pen, out, rows, sp, wg, penalised, tail, probe):
    """A draw as passes over the whole row, spread (TOP-P PASSES in shaders/sampling.wgsl):
    with top-k, sampling_topk_pass for j = 0 .. 3; with top-p, sampling_topp_pass for k =
    0 .. 7; with neither, sampling_max_pass (one workgroup a slice each; the chain's first
    dispatch penalises its slice into scratch: pen = [ctl, history, scratch] bindings);
    sampling_slices_draw; then
    sampling_greedy_final over the slices' draws (which advances the counters with tail's
    ADVANCE). each: params' fields but the pass (Params.pass_i)."""
    dev = batch.device
    V, _, flags = each[:3]
    # [rows, SP] draws, [rows, SP] maxima, [rows, 9, 2] states, [rows, 9] maxima, [rows, 8, SP,
    # 8] bins, [rows, 5, 2] top-k states, [rows, 4, SP, 128] counts, then PROBE's [rows]
    at_probe = 2 * rows * sp + 27 * rows + 64 * rows * sp + 10 * rows + 512 * rows * sp
    cand = Tensor(dev, (at_probe + (rows if probe is not None else 0), 2), "u32")
    chain = ([("sampling_topk_pass", j) for j in range(4)] if flags & TOP_K else []) + \
        ([("sampling_topp_pass", k) for k in range(8)] if flags & TOP_P else []) or \
        [("sampling_max_pass", 0)]       # plain temperature: each slice's max, then the draw
    for i, (entry, k) in enumerate(chain):
        batch.run("sampling", entry, [dev.uniform(params(*each, k)), lb] + pen +
                  [None, cand.binding], sp, rows,
                  constants={"WG": wg, "PENALISE": int(bool(penalised and i == 0))})
    batch.run("sampling", "sampling_slices_draw",
              [dev.uniform(params(*each, 0)), lb, pen[0], None, pen[2], None, cand.binding],
              sp, rows, constants={"WG": wg, "PROBE": int(probe is not None)})
    u2 = dev.uniform(params(V, rows, flags, 0, 1.0, 1.0, 1.0, 0, *each[8:11], sp, *each[12:14],
                            1.0, 1.0, 0))
    batch.run("sampling", "sampling_greedy_final",
              [u2, None, tail["ctl"], tail["hist"], None, out.binding, cand.binding,
               tail["pos"], tail["ring"]], rows,
              constants={"WG": wg, **tail["constants"]})
    if probe is not None:
        batch.copy(cand.buffer, cand.offset + at_probe * 8, probe.buffer, probe.offset, rows * 8)
    cand.release()


def _greedy(batch, u, lb, ctl, history, out, rows, V, H, loff, lstr, flags, wg, tail, npos,
            ring_len):
    """Argmax in two dispatches (shaders/sampling.wgsl sampling_greedy_part / _final): GP
    workgroups per row, each taking slices of 8 * wg logits (penalised there from `history`
    when given: PENALISE), then one per row (which also advances the counters with tail's
    ADVANCE)."""
    dev = batch.device
    gp = max(1, min(256, -(-V // (8 * wg))))
    cand = Tensor(dev, (rows, gp, 2), "u32")
    # bindings 2-4 are part of the layout (read with PENALISE; scratch never written here)
    pen = [ctl.binding, history.binding if history is not None else rw_dummy(dev, 2),
           rw_dummy(dev)]
    batch.run("sampling", "sampling_greedy_part",
              [u, lb] + pen + [None, cand.binding], gp, rows,
              constants={"WG": wg, "PENALISE": int(history is not None)})
    u2 = dev.uniform(params(V, rows, flags, 0, 1.0, 1.0, 1.0, 0, H, loff, lstr, gp,
                            npos, ring_len, 1.0, 1.0, 0))
    batch.run("sampling", "sampling_greedy_final",
              [u2, None, tail["ctl"], tail["hist"], None, out.binding, cand.binding,
               tail["pos"], tail["ring"]], rows,
              constants={"WG": wg, **tail["constants"]})
    cand.release()


def advance(batch, token, ctl, history, pos=None, ring=None):
    """After `sample`: ctl's step += 1 and the sampled ids appended to `history` (where it has
    room), on the GPU (shaders/decode_control.wgsl, the counters sample(then_advance=) moves in
    its own last dispatch where it can), so decode steps chain without the host.
    pos: the model state's positions [Bsz] u32, advanced by 1 in the same dispatch (a decode
    step recorded with `model.step(..., advance_position=False)`), or None.
    ring: u32 [2R] (one row): row 0's id of step s also at ring[s % R] and ring[s % R + R]."""
    dev = batch.device
    rows = token.numel
    cap = history.shape[-1]
    u = dev.uniform(params(rows, cap, pos.numel if pos is not None else 0,
                           ring.numel // 2 if ring is not None else 0))
    batch.run("decode_control", "decode_advance",
              [u, token.binding, ctl.binding, history.binding,
               pos.binding if pos is not None else rw_dummy(dev),
               ring.binding if ring is not None else rw_dummy(dev, 1)], 1)


__all__ = ["sample", "make_control", "set_control", "advance"]
