"""Causal multi-head attention with grouped-query heads (GQA; MHA when KVH = H, MQA when KVH = 1):
prefill/training forward, one-token decode step against a KV cache, backward
(shaders/attention_forward.wgsl, attention_step.wgsl, attention_backward.wgsl).

Shapes (token rows r = b*T + t; heads head-major within a row: head h = columns h*Dh .. +Dh-1):
    q        [Bsz*T, H*Dh]     (or [Bsz, T, H*Dh]) Tensor or Cols view (e.g. a window of a fused
    k, v     [Bsz*T, KVH*Dh]    qkv projection's output)
    o        [Bsz*T, H*Dh]     new contiguous Tensor
    lse      [Bsz, H, T]       row logsumexp of the scaled scores (save=True, for the backward)
    cache_k, cache_v [Bsz, KVH, Tmax, Dh] f32;  pos [Bsz] u32 (py_engine.ops.position)
    step:    q [Bsz, H*Dh], k/v [Bsz, KVH*Dh] -> o [Bsz, H*Dh]

Math (transformers' eager_attention_forward of NemotronH: GQA, no RoPE, f32 softmax):
    S[t, s] = scale q_t[h] . k_s[h // (H / KVH)],  s <= start + t;  o_t = softmax(S[t]) v
    scale defaults to Dh^-0.5. Head dims up to MAX_HEAD_DIM (256), any value, not only powers
    of two.

Dispatches: prefill 1 (no cache) or 2 (cache write, then attention over the cache); step 1
(cache write fused; the slot is read from pos on the GPU); backward 2 (dq + D_t, then dk/dv).
The simple kernels walk long sequences in windows (one dispatch each, `key_window(Dh)` keys or
query rows: 165 at Dh 64) so no thread passes CPU Vulkan's loop-pass cap (ops/loop_budget.py).
Memory: no T x T matrix anywhere (online softmax; the backward recomputes P from lse): the
prefill keeps O(T Dh) per head, the backward adds D [Bsz, H, T].

Two paths for the prefill and the backward (`fast`: None picks, True/False forces):
  simple (software adapters: SwiftShader, lavapipe, where barriers are slow): one 64-thread
    workgroup per (b, h, 64 rows), one thread per row, q/o rows in private arrays;
    workgroup memory 2 BT (Dh + 1) floats (BT from tile_rows).
  tiled (hardware GPUs; *_tiled.wgsl): one 256-thread workgroup per (b, h, 16 rows) (dk/dv:
    (b, g, 16 keys)), 16 threads per row splitting keys and head dims; Q, K/V and the
    score tile in workgroup memory, at most 20 (forward) / 40 (backward) private floats;
    BK/BT key rows per tile (64, 48, 32 or 16) from maxComputeWorkgroupStorageSize.
    geometry() reports grids, threads and workgroup memory per dispatch.
All kernels are deterministic: every output element is summed by one thread in a fixed order
(no atomics, no subgroup reductions).
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import params, workgroup_storage
from py_engine.ops.conv1d import Cols, rw_dummy, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.loop_budget import spans, window_len

MAX_HEAD_DIM = 256          # the shaders' MAXD: q/o rows live in registers
MAX_TILE = 64               # key (query) rows per staged tile
WG = 64                     # threads per workgroup (the shaders' WG): query rows per workgroup
MAX_GRID = 65535
SAVE, CACHE_SHARED = 1, 2   # attention_forward flags
NOT_FIRST, NOT_LAST = 4, 8  # attention_forward: a key window after the first / before the last
ALL_KEYS = 0xFFFFFFFF       # w1 of a single key window
SHARED = 1                  # attention_step / attention_backward flag
FWD, STEP, BWD = "attention_forward", "attention_step", "attention_backward"
FWD_TILED, BWD_TILED = "attention_forward_tiled", "attention_backward_tiled"
TR = 16                     # tiled path: rows (queries, or keys for dk/dv) per workgroup
TX = 16                     # tiled path: threads per row (256-thread workgroups)
TILED_ROWS = (64, 48, 32, 16)   # tiled path: key (query) rows per staged tile, largest that fits


def tile_rows(device, Dh):
    """Rows BT of a staged K/V (Q/dO) tile for head_dim Dh: 2 BT (Dh + 1) floats must fit in
    maxComputeWorkgroupStorageSize; at most MAX_TILE."""
    limit = workgroup_storage(device)
    bt = limit // 4 // (2 * (Dh + 1))
    if bt < 1:
        raise ValueError(f"attention head_dim {Dh} needs {2 * (Dh + 1) * 4} bytes of workgroup "
                         f"memory per tile row but this GPU's maxComputeWorkgroupStorageSize is "
                         f"{limit} bytes")
    return min(bt, MAX_TILE)



def _tiled_words(kind, Dh, bt):
    """Floats of workgroup memory of a tiled kernel (layouts in the *_tiled.wgsl headers)."""
    st = Dh | 1   # odd row strides: the 16 lanes of a row hit distinct banks
    if kind == "fwd":   # Q [TR, st] | K/V [bt, st] | S, P [TR, bt + 1]
        return TR * st + bt * st + 2 * TR * (bt + 1)
    if kind == "dq":    # Q, dO [TR, st] | lse, D [TR] | K, V [bt, st] | dS [TR, bt + 1]
        return 2 * TR * st + 2 * TR + 2 * bt * st + TR * (bt + 1)
    # dkv: K, V [TR, st] | lse, D [bt] | Q, dO [bt, st] | P, dS [TR, bt + 1]
    return 2 * TR * st + 2 * bt + 2 * bt * st + 2 * TR * (bt + 1)


def tiled_constants(device, kind, Dh):
    """Pipeline constants of a tiled kernel ("fwd", "dq" or "dkv") for head_dim Dh, or None
    when even 16-row tiles do not fit maxComputeWorkgroupStorageSize."""
    limit = workgroup_storage(device) // 4
    for bt in TILED_ROWS:
        ws = _tiled_words(kind, Dh, bt)
        if ws <= limit:
            st = Dh | 1
            c = {"DH": Dh, "NK": bt // TX, "ND": -(-Dh // TX), "SST": bt + 1, "WS": ws}
            if kind == "fwd":
                c.update(BK=bt, QST=st, KST=st)
            else:
                c.update(BT=bt, RST=st, TST=st)
            return c
    return None


def _use_tiled(device, kinds, Dh, fast):
    """The tiled path? fast=None: on hardware adapters when it fits; True: required."""
    fits = all(tiled_constants(device, k, Dh) is not None for k in kinds)
    if fast is None:
        return fits and not device.info.get("is_fallback")
    if fast and not fits:
        raise ValueError(f"the tiled attention kernels for head_dim {Dh} do not fit this GPU's "
                         f"maxComputeWorkgroupStorageSize ({workgroup_storage(device)} bytes)")
    return bool(fast)


def geometry(device, *, n_heads, n_kv_heads, head_dim, Bsz, T, fast=None):
    """The dispatches attention_prefill (no cache) and attention_backward would issue, for
    predicting their cost: {"path": "tiled" | "simple", "prefill": [...], "backward": [...]},
    each dispatch {"entry", "grid": (x, y, z), "workgroups", "threads" (per workgroup),
    "wg_bytes" (workgroup memory), "tile_rows"}."""
    H, KVH, Dh, T, Bsz = int(n_heads), int(n_kv_heads), int(head_dim), int(T), int(Bsz)
    out = {"path": "tiled" if _use_tiled(device, ("fwd", "dq", "dkv"), Dh, fast) else "simple"}

    def disp(entry, grid, threads, words, rows):
        return {"entry": entry, "grid": list(grid), "workgroups": grid[0] * grid[1] * grid[2],
                "threads": threads, "wg_bytes": 4 * words, "tile_rows": rows}
    if out["path"] == "tiled":
        tiles = -(-T // TR)
        cs = {k: tiled_constants(device, k, Dh) for k in ("fwd", "dq", "dkv")}
        out["prefill"] = [disp("attention_forward_tiled", (tiles, H, Bsz), TR * TX,
                               cs["fwd"]["WS"], cs["fwd"]["BK"])]
        out["backward"] = [disp("attention_backward_dq_tiled", (tiles, H, Bsz), TR * TX,
                                cs["dq"]["WS"], cs["dq"]["BT"]),
                           disp("attention_backward_dkv_tiled", (tiles, KVH, Bsz), TR * TX,
                                cs["dkv"]["WS"], cs["dkv"]["BT"])]
    else:
        BT = tile_rows(device, Dh)
        tiles = -(-T // WG)
        out["prefill"] = [disp("attention_forward", (tiles, H, Bsz), WG, 2 * BT * Dh, BT)]
        ws = 2 * BT * (Dh + 1)
        out["backward"] = [disp("attention_backward_dq", (tiles, H, Bsz), WG, ws, BT),
                           disp("attention_backward_dkv", (tiles, KVH, Bsz), WG, ws, BT)]
    return out


def _pair(x, y):
    """Bindings of two outputs a kernel writes: ((binding, elem_off), (binding, elem_off), shared).

    WebGPU refuses two writable bindings of one buffer in a dispatch (Dawn: "writable storage
    buffer binding aliasing"), so when x and y live in one buffer (windows of a fused gradient,
    one fused KV cache) both get a single binding spanning them and the kernel writes y through
    x's binding at y's element offset (shared = True; the y binding is then unused)."""
    bx, ox, _ = view(x)
    by, oy, _ = view(y)
    if bx[0] is not by[0]:
        return (bx, ox), (by, oy), False
    lo = min(bx[1], by[1])
    both = (bx[0], lo, max(bx[1] + bx[2], by[1] + by[2]) - lo)
    return (both, ox + (bx[1] - lo) // 4), (both, oy + (by[1] - lo) // 4), True


def _scale(scale, Dh):
    return float(Dh ** -0.5 if scale is None else scale)


def _heads(n_heads, n_kv_heads, width_q, width_kv):
    H, KVH = int(n_heads), int(n_kv_heads)
    if H < 1 or KVH < 1 or H % KVH:
        raise ValueError(f"n_heads={H} must be a positive multiple of n_kv_heads={KVH}")
    if width_q % H:
        raise ValueError(f"q width {width_q} is not a multiple of n_heads={H}")
    Dh = width_q // H
    if width_kv != KVH * Dh:
        raise ValueError(f"k/v width {width_kv} != n_kv_heads * head_dim = {KVH} * {Dh}")
    if Dh > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {Dh} exceeds the attention kernels' limit {MAX_HEAD_DIM}")
    return H, KVH, Dh


def _rows(a, name, rows, width):
    shape = tuple(a.shape)
    n = 1
    for s in shape[:-1]:
        n *= s
    if shape[-1] != width or n != rows:
        raise ValueError(f"{name} has shape {list(shape)}, expected {rows} rows of {width} "
                         f"([Bsz*T, {width}] or [Bsz, T, {width}])")


def _check_cache(cache_k, cache_v, Bsz, KVH, Dh):
    for name, c in (("cache_k", cache_k), ("cache_v", cache_v)):
        if c is None or len(c.shape) != 4 or tuple(c.shape[:2]) != (Bsz, KVH) or c.shape[3] != Dh:
            raise ValueError(f"{name} must be [Bsz={Bsz}, KVH={KVH}, Tmax, Dh={Dh}], got "
                             f"{None if c is None else list(c.shape)}")
    if tuple(cache_k.shape) != tuple(cache_v.shape):
        raise ValueError(f"cache_k {list(cache_k.shape)} and cache_v {list(cache_v.shape)} differ")
    return cache_k.shape[2]


def attention_prefill(batch, q, k, v, *, n_heads, n_kv_heads, Bsz, T, scale=None, cache_k=None,
                      cache_v=None, start=0, save=False, fast=None):
    """-> (o [Bsz*T, H*Dh] new Tensor, lse [Bsz, H, T] Tensor or None)

    Without a cache: causal attention within each sequence (training, a fresh prefill), 1
    dispatch. With cache_k/cache_v: this call's k/v go into cache slots [start, start+T) first,
    then query t attends to slots [0, start+t] (continuing a conversation), 2 dispatches.
    save=True also returns the row logsumexp for attention_backward. fast: None picks the
    tiled kernel on hardware adapters, True / False force it / the simple one (tests).
    """
    dev = batch.device
    Bsz, T, start = int(Bsz), int(T), int(start)
    if Bsz < 1 or T < 1:
        raise ValueError(f"attention_prefill needs Bsz >= 1 and T >= 1, got Bsz={Bsz}, T={T}")
    H, KVH, Dh = _heads(n_heads, n_kv_heads, q.shape[-1], k.shape[-1])
    rows = Bsz * T
    _rows(q, "q", rows, H * Dh)
    _rows(k, "k", rows, KVH * Dh)
    _rows(v, "v", rows, KVH * Dh)
    if (cache_k is None) != (cache_v is None):
        raise ValueError("pass both cache_k and cache_v, or neither")
    if cache_k is None and start:
        raise ValueError(f"start={start} needs a KV cache (cache_k/cache_v)")
    if T > MAX_GRID or Bsz > MAX_GRID or H > MAX_GRID:
        raise ValueError(f"attention grid (T={T}, H={H}, Bsz={Bsz}) exceeds {MAX_GRID} per "
                         "dimension: split the call")
    tiled = _use_tiled(dev, ("fwd",), Dh, fast)
    BT = tiled_constants(dev, "fwd", Dh)["BK"] if tiled else tile_rows(dev, Dh)
    o = Tensor(dev, (rows, H * Dh))
    lse = Tensor(dev, (Bsz, H, T)) if save else None
    qv, kv_, vv, ov = view(q), view(k), view(v), view(o)
    Tmax, flags, cko, cvo = 0, SAVE if save else 0, 0, 0
    if cache_k is not None:
        Tmax = _check_cache(cache_k, cache_v, Bsz, KVH, Dh)
        if start < 0 or start + T > Tmax:
            raise ValueError(
                f"attention KV cache overflow: start={start} + T={T} tokens = {start + T} > the "
                f"cache's Tmax={Tmax} slots: allocate a longer cache (Tmax >= {start + T}) or "
                "start a new conversation")
        # keys/values through the cache [Bsz, KVH, Tmax, Dh]
        kaddr = (0, KVH * Tmax * Dh, Tmax * Dh, Dh)
        vaddr = kaddr
        keys, vals = cache_k.binding, cache_v.binding
        (ckb, cko), (cvb, cvo), shared = _pair(cache_k, cache_v)
        if shared:
            flags |= CACHE_SHARED
    else:
        # keys/values straight out of the views: (off, per batch, per kv head, per token)
        kaddr = (kv_[1], T * kv_[2], Dh, kv_[2])
        vaddr = (vv[1], T * vv[2], Dh, vv[2])
        keys, vals = kv_[0], vv[0]
    fields = [T, H, KVH, Dh, Bsz, BT, start, flags, _scale(scale, Dh), Tmax, qv[1], qv[2],
              ov[1], ov[2], *kaddr, *vaddr, kv_[1], kv_[2], vv[1], vv[2], cko, cvo,
              0, ALL_KEYS, 0, 0]
    un = dev.uniform(params(*fields))
    if cache_k is not None:
        batch.run(FWD, "attention_cache_write",
                  [un, None, kv_[0], vv[0], None, None, ckb,
                   rw_dummy(dev, 0) if flags & CACHE_SHARED else cvb],
                  -(-KVH * Dh // 64), T, Bsz)
    res = [un, qv[0], keys, vals, ov[0], lse.binding if save else rw_dummy(dev, 0)]
    if tiled:
        batch.run(FWD_TILED, "attention_forward_tiled", res, -(-T // TR), H, Bsz,
                  constants=tiled_constants(dev, "fwd", Dh))
    else:
        # one thread walks all its keys: past the loop-pass budget (lavapipe) in key windows
        wins = spans(start + T, key_window(Dh))
        ml = Tensor(dev, (2 * Bsz * H * T,)) if len(wins) > 1 else None
        for i, (w0, wn) in enumerate(wins):
            if ml is not None:
                f = list(fields)
                f[7] = flags | (NOT_FIRST if i else 0) | (NOT_LAST if i + 1 < len(wins) else 0)
                f[-4:-2] = [w0, w0 + wn]
                res[0] = dev.uniform(params(*f))
            batch.run(FWD, "attention_forward",
                      res + [None, None, ml.binding if ml is not None else rw_dummy(dev, 2)],
                      -(-T // WG), H, Bsz, constants={"WS": 2 * BT * Dh})
        if ml is not None:
            ml.release()   # the pool hands it out again only to later-recorded work
    return o, lse


def key_window(Dh):
    """Keys (query rows, for dk/dv) one simple-kernel thread may walk per dispatch within the
    loop-pass budget (py_engine/ops/loop_budget.py): per key 1 + 3 (Dh + 1) passes (the score,
    a rescale, the accumulation) and its share of staging the tile; ~165 keys at Dh 64."""
    return window_len(3 * Dh + 6, fixed=4 * Dh + 72)


# On a real GPU a long cache is split for speed as well: the H x Bsz workgroups of one split
# (12 at one sequence of a 12-head model) leave most of the GPU idle while each walks every
# cached slot; splits of GPU_SPLIT_SLOTS slots give H x Bsz x NS workgroups for one merge
# dispatch more, so only caches of GPU_SPLIT_MIN slots or more (capacity) take them. (Reasoned from the
# grid, not yet timed on a GPU; splits past the current position return at once.)
GPU_SPLIT_SLOTS = 256
GPU_SPLIT_MIN = 1024


def step_span(dev, Tmax, Dh):
    """Cache slots per split of attention_step's walk (the whole cache + 1 when one split
    does). A thread walks every 64th slot, so caches too long for the loop-pass budget
    (lavapipe) split over several workgroups per (b, h), merged by a second dispatch; on a real
    GPU (or with device.force_step_splits) caches of GPU_SPLIT_MIN slots split every
    GPU_SPLIT_SLOTS."""
    span = 64 * window_len(3 * Dh + 4, fixed=Dh + 200 + 100 * -(-Dh // 32))
    forced = getattr(dev, "force_step_splits", None)
    fast = forced if forced is not None else not dev.info.get("is_fallback")
    if fast and Tmax >= GPU_SPLIT_MIN:
        span = min(span, GPU_SPLIT_SLOTS)
    return span


def attention_step(batch, q, k, v, cache_k, cache_v, pos, *, n_heads, n_kv_heads, scale=None,
                   out=None):
    """One token per sequence: q [Bsz, H*Dh], k/v [Bsz, KVH*Dh] (Tensors or Cols views), pos
    [Bsz] u32 on the GPU = this token's slot -> o [Bsz, H*Dh] (new Tensor, or `out`: a Tensor or
    Cols view). Writes k/v into slot pos[b] and attends to slots [0, pos[b]]; a pos >= Tmax
    writes nothing (the caller must refuse earlier). 1 dispatch (2 for caches longer than
    ~10k slots at Dh 64, ~5k at Dh 128 -- split over workgroups for the loop-pass budget -- and
    on a real GPU from 1,024 slots: step_span); no host reads or writes, so it records and
    replays with position.advance."""
    dev = batch.device
    H, KVH, Dh = _heads(n_heads, n_kv_heads, q.shape[-1], k.shape[-1])
    Bsz = 1 if len(q.shape) == 1 else q.shape[0]
    for name, a, w in (("q", q, H * Dh), ("k", k, KVH * Dh), ("v", v, KVH * Dh)):
        nb = 1 if len(a.shape) == 1 else a.shape[0]
        if len(a.shape) > 2 or nb != Bsz or a.shape[-1] != w:
            raise ValueError(f"{name} has shape {list(a.shape)}, expected [{Bsz}, {w}]")
    Tmax = _check_cache(cache_k, cache_v, Bsz, KVH, Dh)
    if tuple(pos.shape) != (Bsz,) or pos.dtype != "u32":
        raise ValueError(f"pos must be a [{Bsz}] u32 tensor, got {list(pos.shape)} {pos.dtype}")
    if Bsz > MAX_GRID or H > MAX_GRID:
        raise ValueError(f"attention_step grid (H={H}, Bsz={Bsz}) exceeds {MAX_GRID}")
    o = out if out is not None else Tensor(dev, (Bsz, H * Dh))
    if o.shape[-1] != H * Dh:
        raise ValueError(f"out has shape {list(o.shape)}, expected [{Bsz}, {H * Dh}]")
    qv, kv_, vv, ov = view(q), view(k), view(v), view(o)
    (ckb, cko), (cvb, cvo), shared = _pair(cache_k, cache_v)
    span = step_span(dev, Tmax, Dh)
    NS = -(-(Tmax + 1) // span)
    un = dev.uniform(params(H, KVH, Dh, Bsz, Tmax, _scale(scale, Dh), qv[1], qv[2],
                            kv_[1], kv_[2], vv[1], vv[2], ov[1], ov[2], cko, cvo,
                            SHARED if shared else 0, span if NS > 1 else 0, NS, 0))
    part = Tensor(dev, (Bsz * H * NS * (2 + Dh),)) if NS > 1 else None
    batch.run(STEP, "attention_step",
              [un, qv[0], kv_[0], vv[0], ckb, rw_dummy(dev, 0) if shared else cvb, pos.binding,
               ov[0], part.binding if part is not None else rw_dummy(dev, 3)], H, Bsz, NS)
    if part is not None:
        batch.run(STEP, "attention_step_merge",
                  [un, None, None, None, None, None, None, ov[0], part.binding], H, Bsz)
        part.release()   # the pool hands it out again only to later-recorded work
    return o


def attention_backward(batch, do, q, k, v, o, lse, *, n_heads, n_kv_heads, Bsz, T, scale=None,
                       grads=None, fast=None):
    """-> {"dq": [Bsz*T, H*Dh], "dk": [Bsz*T, KVH*Dh], "dv": [Bsz*T, KVH*Dh]}

    The backward of attention_prefill without a cache (training). do, q, k, v, o: Tensors or Cols
    views; lse [Bsz, H, T] from attention_prefill(save=True). grads: optional dict of
    preallocated outputs (Tensors or Cols views, e.g. windows of one fused gradient buffer);
    they are overwritten. dk/dv sum over the H/KVH query heads of a group in a fixed order.
    2 dispatches, deterministic. fast: as attention_prefill's.
    """
    dev = batch.device
    Bsz, T = int(Bsz), int(T)
    H, KVH, Dh = _heads(n_heads, n_kv_heads, q.shape[-1], k.shape[-1])
    rows = Bsz * T
    for name, a, w in (("do", do, H * Dh), ("q", q, H * Dh), ("k", k, KVH * Dh),
                       ("v", v, KVH * Dh), ("o", o, H * Dh)):
        _rows(a, name, rows, w)
    if tuple(lse.shape) != (Bsz, H, T):
        raise ValueError(f"lse has shape {list(lse.shape)}, expected [{Bsz}, {H}, {T}]")
    if T > MAX_GRID or Bsz > MAX_GRID or H > MAX_GRID:
        raise ValueError(f"attention grid (T={T}, H={H}, Bsz={Bsz}) exceeds {MAX_GRID}")
    grads = dict(grads or {})
    for name, w in (("dq", H * Dh), ("dk", KVH * Dh), ("dv", KVH * Dh)):
        if grads.get(name) is None:
            grads[name] = Tensor(dev, (rows, w))
        else:
            _rows(grads[name], name, rows, w)
    tiled = _use_tiled(dev, ("dq", "dkv"), Dh, fast)
    BT = tile_rows(dev, Dh) if not tiled else tiled_constants(dev, "dq", Dh)["BT"]
    delta = Tensor(dev, (Bsz, H, T))
    qv, kv_, vv, ov, dov = view(q), view(k), view(v), view(o), view(do)
    dqv, dkv, dvv = view(grads["dq"]), view(grads["dk"]), view(grads["dv"])
    (dkb, dko), (dvb, dvo), shared = _pair(grads["dk"], grads["dv"])
    fields = [T, H, KVH, Dh, Bsz, BT, _scale(scale, Dh), SHARED if shared else 0,
              qv[1], qv[2], kv_[1], kv_[2], vv[1], vv[2], ov[1], ov[2],
              dov[1], dov[2], dqv[1], dqv[2], dko, dkv[2], dvo, dvv[2], 0, ALL_KEYS, 0, 0]
    un = dev.uniform(params(*fields))
    res_dq = [un, qv[0], kv_[0], vv[0], ov[0], dov[0], lse.binding, delta.binding, dqv[0]]
    res_dkv = [un, qv[0], kv_[0], vv[0], None, dov[0], lse.binding, delta.binding, None,
               dkb, rw_dummy(dev, 0) if shared else dvb]
    if tiled:
        tiles = -(-T // TR)
        batch.run(BWD_TILED, "attention_backward_dq_tiled", res_dq, tiles, H, Bsz,
                  constants=tiled_constants(dev, "dq", Dh))
        batch.run(BWD_TILED, "attention_backward_dkv_tiled", res_dkv, tiles, KVH, Bsz,
                  constants=tiled_constants(dev, "dkv", Dh))
    else:
        consts = {"WS": 2 * BT * (Dh + 1)}
        # one thread walks all its keys (dq) or its group's queries (dk/dv): past the
        # loop-pass budget (lavapipe) in windows of that axis, each adding to the last
        G = H // KVH
        for entry, res, gy, step in (("attention_backward_dq", res_dq, H, key_window(Dh)),
                                     ("attention_backward_dkv", res_dkv, KVH,
                                      window_len(G * (2 * Dh + 6), fixed=4 * Dh + 72 + 8 * G))):
            for w0, wn in spans(T, step):
                f = list(fields)
                f[-4:-2] = [w0, w0 + wn]
                res[0] = un if wn == T else dev.uniform(params(*f))
                batch.run(BWD, entry, res, -(-T // WG), gy, Bsz, constants=consts)
    delta.release()   # the pool hands it out again only to later-recorded work
    return {"dq": grads["dq"], "dk": grads["dk"], "dv": grads["dv"]}
