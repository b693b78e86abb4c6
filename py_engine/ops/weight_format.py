"""Weights kept narrow on the GPU: f16 / bf16 / q8 (int8, a scale per row) / q4 (4-bit, an f16
scale per group of 32). Layouts: shaders/lib/weight_formats.wgsl.

  quantize(batch, w [N,K] f32, fmt)      -> Tensor dtype fmt (once, at load: quantize.wgsl)
  dequantize(batch, w, ids=None)         -> f32 [N,K], or the rows ids[t] as [T,K] (dequant.wgsl)
  matvec(batch, x [M,K], ws, ys, ...)    y_g (+)= x @ W_g^T for M <= 4 (matvec_<fmt>.wgsl)

Decode reads the narrow bytes directly (the point: half / a quarter / an eighth of f32's
traffic); prefill and training GEMMs dequantize a temporary f32 copy of one weight at a time
(compute-bound there, and the GEMM kernels stay one per shape, not one per format).
"""
from py_engine.gpu.settings import pick, storage_bindings
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import MAX_GROUPS, dummy, fold, params
from py_engine.ops.rmsnorm import NormedRows

FORMATS = ("f32", "f16", "bf16", "q8", "q4")
# K must be a multiple of this for the 16-byte-chunk mat-vec of each format
K_MULTIPLE = {"f32": 4, "f16": 8, "bf16": 8, "q8": 16, "q4": 32}
BITS = {"f32": 32, "f16": 16, "bf16": 16, "q8": 8, "q4": 4}
THREADS = 256
TARGET_GROUPS = 512   # workgroups per matrix under MAMBAWEB_MATVEC_RULE=older (rows_per_thread_group)


ALIASES = {"int8": "q8", "fp32": "f32", "fp16": "f16"}   # other names people give the formats


def check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}: choose one of {', '.join(FORMATS)} "
                         f"(int8 is q8: 8-bit with one scale per row)")
    return fmt


def format_named(name):
    """The weight format `name` stands for, as a person may type it on the command line: one of
    FORMATS, any case, or an alias (int8 -> q8, fp16 -> f16, fp32 -> f32); else ValueError
    naming the choices."""
    key = str(name).strip().lower()
    return check_format(ALIASES.get(key, key))


def format_arg(name):
    """format_named for argparse (`type=`): its message shown as the error."""
    import argparse
    try:
        return format_named(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fits(shape, fmt) -> bool:
    """Whether a weight of `shape` can be stored as `fmt` (2-D with K a multiple of the chunk)."""
    return len(shape) == 2 and shape[1] % K_MULTIPLE[fmt] == 0


def quantize(batch, w, fmt):
    """A new tensor holding f32 `w` [N, K] in `fmt` (the caller releases `w` when done)."""
    check_format(fmt)
    if fmt == "f32" or w.dtype == fmt:
        return w
    if w.dtype != "f32":
        raise ValueError(f"quantize: {w.dtype} -> {fmt} is not supported (start from f32)")
    if not fits(w.shape, fmt):
        raise ValueError(f"a {list(w.shape)} weight cannot be stored as {fmt}: its last "
                         f"dimension must be a multiple of {K_MULTIPLE[fmt]}")
    dev = batch.device
    N, K = w.shape
    q = Tensor(dev, (N, K), fmt)
    u = dev.uniform(params(N, K, 0, 0))
    if fmt == "q8":
        gx, gy = fold(N)                       # one workgroup per row
    elif fmt == "q4":
        gx, gy = fold(-(-(N * K // 64) // THREADS))   # one thread per pair of groups
    else:
        gx, gy = fold(-(-(N * K // 2) // THREADS))    # one thread per output word
    batch.run("quantize", f"quantize_{fmt}", [u, w.binding, q.binding], gx, gy)
    return q


def dequantize(batch, w, ids=None, out=None, block=None):
    """f32 copy of narrow `w` [N, K]: all rows, or rows ids[t] (u32 [T]) as [T, K].
    block (r0, first): `w` is the row block [r0, r0 + N) of a split table
    (py_engine/gpu/row_chunks.py) and out row t gets W[ids[t]] only when this block holds it;
    otherwise zeros for the first block, nothing for the others."""
    dev = batch.device
    N, K = w.shape
    if w.dtype == "f32":
        raise ValueError("dequantize: the weight is already f32")
    T = ids.numel if ids is not None else N
    y = out if out is not None else Tensor(dev, (T, K))
    gx = -(-K // THREADS)
    for row0 in range(0, T, MAX_GROUPS):       # the rows are the y dimension of the grid
        rows = min(MAX_GROUPS, T - row0)
        if ids is not None and row0:
            raise ValueError(f"embedding lookup of {T} tokens at once: at most {MAX_GROUPS}")
        flags, base = (1 if ids is not None else 0), row0
        if block is not None:           # ids only (a gather), T <= MAX_GROUPS: row0 is 0
            flags, base = flags | 2 | (4 if block[1] else 0), block[0]
        u = dev.uniform(params(rows, K, N, flags, base, 0, 0, 0))
        out_binding = y.binding if row0 == 0 else _row_slice(y, row0, rows, K)
        batch.run("dequant", f"dequant_{w.dtype}",
                  [u, w.binding, ids.binding if ids is not None else dummy(dev), out_binding],
                  gx, rows)
    return y


def _row_slice(y, row0, rows, K):
    off = row0 * K * 4
    if off % 256:
        raise ValueError(f"dequantize: row block at {row0} is not 256-byte aligned (K={K})")
    return (y.buffer, y.offset + off, rows * K * 4)


# Rows at which a thread starts reading 2, then 4 weight rows (RPT), per format ("older": the
# rule before, one for all formats). Measured on an H200 with tools/sweep_matvec.py --chain
# (distinct weights back to back in one pass, as decode runs them; 2026-12-01): q4's fastest
# mamba-1.4b in_proj (2 x 4096 x 2048) and out_proj (2048 x 4096) ran at RPT 2 (15.6 and 11.2 us
# against 19.9 and 12.4 at RPT 1), f16's at RPT 1 (15.2 and 11.1 against 16.3 and 11.7 at RPT
# 2), f32's at RPT 1 (24.0 and 14.4, against 28.1 under the older rule's RPT 2 for the in_proj);
# the LM heads (50,280 rows) within a few % at RPT 2-4 (f32's 1.4b head varied 1.5x between
# passes).
RPT_FROM = {"older": (4096, 8192), "f32": (8192, 8192), "f16": (8192, 8192),
            "bf16": (8192, 8192), "q8": (2048, 8192), "q4": (2048, 8192)}
# Workgroups a decode mat-vec aims for, counted over all of a call's matrices (the grid's z),
# per format ("older": TARGET_GROUPS per matrix). The chain sweep's fastest choice per shape
# gave 384-512 workgroups for f16 and f32 (1.4b in_proj 512: TPR 16 at 15.2 us f16 / 24.0 f32,
# where the older rule's 1,024 took 23.1 / 28.1; mamba-130m's in_proj 384: 7.4 us f16 against
# 13.5 at 1,536, f32 10.8 against 19.3; its out_proj 384: 7.5 against 10.1 f16, 11.6 against
# 16.0 f32), and about half that for q4 (in_proj 256: 15.6 against 28.2; out_proj 256: 11.2
# against 16.6), whose thread does more decoding per byte. Re-checked end to end for q4 at
# mamba-130m (2026-12-01, `--variant g384:MAMBAWEB_MATVEC_GROUPS=384 --variant
# g256:MAMBAWEB_MATVEC_GROUPS=256`): GPU ms per token 0.607 at 192, 0.669 at 384, 0.658 at 256.
GROUPS_AIMED = {"f32": 384, "f16": 384, "bf16": 384, "q8": 192, "q4": 192}


def rules_of(fmt):
    """The rows of RPT_FROM / GROUPS_AIMED / staging that apply: `fmt`'s, or "older" when
    MAMBAWEB_MATVEC_RULE=older (the one rule of before 2026-12-01 for every call, for
    side-by-side bench variants; a row-chunked table's parts now all take the whole table's
    choices, where before each part took its own RPT and staging)."""
    from py_engine.ops.step_kernels import choose
    tuned = choose(None, "matvec_rule", "MAMBAWEB_MATVEC_RULE", "tuned", "older", lambda: True)
    return fmt if tuned else "older"


def rows_per_thread(device, N, M, override=None, fmt="f32"):
    """Weight rows each thread reads (RPT in lib/matvec_rows.wgsl: 1, 2 or 4, RPT * M <= 4):
    2 from RPT_FROM[fmt][0] rows, 4 from [1] -- tall matrices only: short ones were slower at
    RPT 2 or 4 in every sweep (fewer, longer workgroups).
    `override`, else device.matvec_rpt (tests), else MAMBAWEB_MATVEC_RPT (the sweep) replaces
    the rule."""
    from py_engine.ops.step_kernels import pick

    def rule():
        two, four = RPT_FROM.get(rules_of(fmt), RPT_FROM["older"])
        return 4 if N >= four else 2 if N >= two else 1
    want = override or pick(device, "matvec_rpt", "MAMBAWEB_MATVEC_RPT", (1, 2, 4), rule)
    rpt = 1
    while rpt < 4 and rpt * 2 * M <= 4 and rpt * 2 <= want:
        rpt *= 2
    return rpt


def stage_x(device, M, override=None, fmt="f32", N=0, tpr=None):
    """Whether the decode mat-vec stages x in workgroup memory, chunk-interleaved (STAGE in
    lib/matvec_rows.wgsl; one x row only): `override`, else device.matvec_stage (tests), else
    MAMBAWEB_MATVEC_STAGE=0|1 (sweeps), else the rule below. Unstaged, the lanes of a narrow
    format read x CV vec4s apart (q4: 128 bytes of x per 16 weight bytes), and with few lanes
    per row (TPR) a warp spans several rows' x reads. Swept on an H200: q4 in_proj 226 -> 87 us
    staged (one dispatch at a time), LM head q4 302 -> 120; with the chain sweep (back to back)
    at TPR 16, the 1.4b in_proj f16 15.2 us staged against 18+ unstaged, f32 24.0 against 30.4,
    while from TPR 64 staging was even or slower (out_proj f16 11.1 unstaged, 11.4 staged;
    x_proj-sized matrices, 160 rows, slower staged: the tile's barriers, nothing to win). So:
    q4/q8 from 512 rows; f32/f16/bf16 at TPR <= 32 (without a TPR, or under
    MAMBAWEB_MATVEC_RULE=older: f16/bf16 from 8,192 rows, f32 never)."""
    if M != 1:
        return False
    if override is not None:
        return bool(override)
    from py_engine.ops.step_kernels import choose

    def rule():
        if fmt in ("q4", "q8"):
            return N >= 512
        if tpr is not None and rules_of(fmt) != "older":
            return tpr <= 32
        return fmt in ("f16", "bf16") and N >= 8192
    return choose(device, "matvec_stage", "MAMBAWEB_MATVEC_STAGE", "1", "0", rule)


def prefetch_level(device):
    """When the decode mat-vec loads its weights (PREFETCH in lib/matvec_rows.wgsl): 0 each trip
    of four loads as it is summed, 1 also the first trip and the store's addends before the norm
    prologue / staging, 2 also the next trip while summing the current one, 3 the weights as at
    0 but the store's addends (bias, the residual out_proj accumulates into, the conv's taps)
    before the sums. Every level computes the same sums in the same order.
    Default 3: side by side in one native H200 process (`mambaweb bench --native --json --only
    model --models mamba1_4b,mamba130m --weights f16,q4 --decode-tokens 128 --max-seconds 1
    --variant pf3:MAMBAWEB_MATVEC_PREFETCH=3 --variant base2:MAMBAWEB_MATVEC_PREFETCH=0
    --variant pf3b:MAMBAWEB_MATVEC_PREFETCH=3`, 2026-12-01) GPU ms per token at 0 / 3, two runs
    of each interleaved: 1.4b f16 1.772, 1.779 / 1.753, 1.738; q4 1.870, 1.855 / 1.838, 1.844;
    mamba-130m f16 0.598, 0.593 / 0.574, 0.584; q4 0.616, 0.630 / 0.608, 0.609 -- 1-3% less,
    every pair (no memory wait after the tree). 1 and 2 cost GPU time (1.4b f16 2.30 ms/token at
    0, 2.48 at 1, 2.53 at 2 in an earlier run; q4 2.74, 3.35, 3.43; mamba-130m q4 0.67, 0.85,
    0.95: the first trip's registers held across the norm prologue and the staging, by our
    reading). `device.matvec_prefetch` (tests), else MAMBAWEB_MATVEC_PREFETCH (bench variants)."""
    from py_engine.ops.step_kernels import pick
    return pick(device, "matvec_prefetch", "MAMBAWEB_MATVEC_PREFETCH", (0, 1, 2, 3), lambda: 3)


def tail_trip(device):
    """Whether the decode mat-vec loads a walk's last chunks (fewer than a trip's) as one trip
    and its norm prologue's x four vec4s at a time (TAIL in lib/matvec_rows.wgsl), instead of
    one load per loop pass -- a memory wait each (mamba-130m's in_proj: three chunks per thread,
    all of them in that loop). The same sums in the same order, bit for bit. With the scan
    step's DT_TRIP8, side by side in one native H200 process (`mambaweb bench --native --json
    --only model --models M --weights f16,q4 --decode-tokens 128 --max-seconds 1 --variant
    old:MAMBAWEB_MATVEC_TAIL=0,MAMBAWEB_SCAN_STEP_TRIP8=0`, 2026-12-01), GPU ms per token new /
    old: mamba-130m f16 0.548 / 0.575, q4 0.607 / 0.608; mamba-1.4b f16 1.750, 1.736 / 1.728,
    1.751, q4 1.844, 1.854 / 1.837, 1.829 (two runs each: within the spread at 1.4b, whose
    walks have no tail but x_proj's). `device.matvec_tail` (tests), else MAMBAWEB_MATVEC_TAIL =
    1 | 0 (bench variants), else on."""
    from py_engine.ops.step_kernels import choose
    return choose(device, "matvec_tail", "MAMBAWEB_MATVEC_TAIL", "1", "0", lambda: True)


def scale_word(device):
    """Whether the q4 mat-vec loads each group scale as its own 4-byte word (SCALE_WORD in
    shaders/matvec_q4.wgsl) rather than the 16-byte vec4 that holds it, taken apart after: the
    same scales, bit for bit. Through Dawn on the H200, one process (`python -m tools.ab_decode
    --dawn --models mamba1_4b --weights q4,f16 --tokens 128 --rounds 2 --setting
    base:MAMBAWEB_MATVEC_SCALE_WORD=0 --setting sw:MAMBAWEB_MATVEC_SCALE_WORD=1`,
    .bench/call26c.sh), GPU ms a token: mamba-1.4b q4 1.634, 1.617 -> 1.563, 1.565 (f16 in the
    same process 1.565-1.604); mamba-130m q4 0.510 either way. `device.matvec_scale_word`
    (tests), else MAMBAWEB_MATVEC_SCALE_WORD = 1 | 0 (bench variants), else on."""
    from py_engine.ops.step_kernels import choose
    return choose(device, "matvec_scale_word", "MAMBAWEB_MATVEC_SCALE_WORD", "1", "0",
                  lambda: True)


def subgroup_tree(device):
    """Whether the decode mat-vec's reductions (the norm prologue's sum of squares, the rows'
    partial sums) take their steps below the subgroup size as subgroup shuffles (SG in
    lib/matvec_rows.wgsl) instead of workgroup-memory steps with a barrier each: the same
    additions in the same order, the same bits. On: side by side in one native H200 process
    (`mambaweb bench --native --only model --models mamba1_4b,mamba130m --weights f16,q4
    --variant base:MAMBAWEB_MATVEC_SG=0 --variant sg:MAMBAWEB_MATVEC_SG=1`) GPU ms per token
    went 1.869 -> 1.820 (1.4b f16), 1.944 -> 1.881 (q4), 0.614 -> 0.601 (130m f16), 0.648 ->
    0.621 (q4). On GPUs with hardware subgroups (step_kernels.subgroup_gpu; a CPU adapter
    running the kernel under `force_matvec` keeps the tree). `device.matvec_sg` (tests), else
    MAMBAWEB_MATVEC_SG = 1 | 0 (bench variants)."""
    from py_engine.ops.step_kernels import choose, subgroup_gpu
    return choose(device, "matvec_sg", "MAMBAWEB_MATVEC_SG", "1", "0",
                  lambda: subgroup_gpu(device))


def norm_in_stage(device):
    """Whether a normalised, staged decode mat-vec sums x's squares in its staging loads
    (NORM_IN_STAGE in lib/matvec_rows.wgsl: no prologue reading x before the weights, 1/rms
    from a tree after the rows' sums) instead of a prologue: the same values to rounding.
    On: with the subgroup tree, in the same process as subgroup_tree's numbers (`--variant
    late:MAMBAWEB_MATVEC_SG=1,MAMBAWEB_MATVEC_NORM_IN_STAGE=1`), GPU ms per token 1.820 ->
    1.785 (1.4b f16), 1.881 -> 1.883 (q4), 0.601 -> 0.615 and 0.621 -> 0.623 (130m f16, q4:
    within that run's noise). `device.matvec_norm_in_stage` (tests), else
    MAMBAWEB_MATVEC_NORM_IN_STAGE = 1 | 0 (bench variants)."""
    from py_engine.ops.step_kernels import choose
    return choose(device, "matvec_norm_in_stage", "MAMBAWEB_MATVEC_NORM_IN_STAGE", "1", "0",
                  lambda: True)


def rows_per_thread_group(fmt, K, N, rpt=1, device=None, G=1, xproj=False):
    """Threads sharing one row (TPR, a pipeline constant, a power of two in 16..256): the
    fewest that still give the GPU the workgroups GROUPS_AIMED[fmt] asks for over the call's G
    matrices of N rows (256 / TPR * rpt rows a workgroup), and never more than the row has
    16-byte chunks. Tall matrices want few threads per row (the LM head, 50,280 rows: TPR 16
    read 2.95 TB/s where 128 read 1.9), short ones many (x_proj's 160 rows: TPR 128-256, 3x
    faster than 16); the chain sweep's numbers are at GROUPS_AIMED.
    `device.matvec_tpr` (tests), else MAMBAWEB_MATVEC_TPR (bench variants), replaces the rule
    (a power of two in 16..256); MAMBAWEB_MATVEC_GROUPS replaces the workgroups aimed at,
    counted as the rule in force counts them (over the call's matrices; per matrix under
    MAMBAWEB_MATVEC_RULE=older) -- bench variants. xproj: Mamba-1's in_proj with x_proj's
    shares folded in (XPROJ_TPR below)."""
    from py_engine.ops.step_kernels import pick

    def rule():
        import os
        if xproj:
            return XPROJ_TPR
        env = os.environ.get("MAMBAWEB_MATVEC_GROUPS", "")
        rules = rules_of(fmt)
        groups = int(env) if env else GROUPS_AIMED.get(rules, TARGET_GROUPS)
        rows = N * (G if rules in GROUPS_AIMED else 1)
        chunks = K // (128 // BITS[fmt])          # 16 bytes hold 128 / bits values
        tpr = 16
        while tpr < THREADS and tpr < chunks and rows * tpr < groups * THREADS * rpt:
            tpr *= 2
        return tpr
    return pick(device, "matvec_tpr", "MAMBAWEB_MATVEC_TPR", (16, 32, 64, 128, 256), rule)


CONV_STORAGE_BUFFERS = 10   # matvec_forward_conv's storage bindings (a Mac's Chrome and SwiftShader: 10)


def planned(fmt, N, K):
    """(rpt, tpr, stage) that MAMBAWEB_MATVEC_PLAN sets for a decode mat-vec of N rows (the
    tallest matrix of the call, or a row-chunked table's whole height) by K inputs in `fmt`,
    else None; None in a slot keeps the rule's choice. The plan is entries
    `[fmt:]NxK=RPT/TPR/STAGE` joined by ';' -- a format-less entry serves every format; RPT 1, 2
    or 4 (0: the rule's), TPR 16..256 a power of two (0: the rule's), STAGE 0, 1 or - (the
    rule's) -- e.g. `q4:4096x2048=2/16/1;50280x2048=0/16/-`: per-matrix choices to try end to
    end as bench variants (tools/sweep_matvec.py times them one shape at a time)."""
    import os
    text = os.environ.get("MAMBAWEB_MATVEC_PLAN", "").strip()
    if not text:
        return None
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        try:
            key, _, val = entry.partition("=")
            f, _, shape = key.rpartition(":")
            n, k = (int(v) for v in shape.split("x"))
            r, t, st = val.split("/")
            rpt, tpr = int(r), int(t)
            if f not in ("",) + FORMATS or rpt not in (0, 1, 2, 4) or \
                    tpr not in (0, 16, 32, 64, 128, 256) or st not in ("0", "1", "-"):
                raise ValueError
        except ValueError:
            raise ValueError(f"MAMBAWEB_MATVEC_PLAN entry {entry!r} is not "
                             "[fmt:]NxK=RPT/TPR/STAGE with fmt one of " + ", ".join(FORMATS) +
                             ", RPT 0/1/2/4, TPR 0 or 16..256 a power of two, STAGE 0/1/- "
                             "(e.g. q4:4096x2048=2/16/1)") from None
        if (n, k) == (N, K) and f in ("", fmt):
            return rpt or None, tpr or None, None if st == "-" else st == "1"
    return None


# Per-shape plans (RPT, TPR, STAGE: planned's slots) measured end to end where the rules'
# choice lost, for that format and shape only (not under MAMBAWEB_MATVEC_RULE=older; a
# MAMBAWEB_MATVEC_PLAN entry for the shape wins). f16 2,048 x 4,096 (mamba-1.4b's out_proj):
# two rows a thread at 64 threads a row, unstaged (256 workgroups, the x vec4s loaded once for
# both rows), where the rule gives one row at 64 (512 workgroups). Through Dawn on an H100, one
# process, one loaded model (`tools/device/gpu_session.sh --tune16`, 2026-12-06: tools/ab_decode
# --tokens 128 --rounds 2), GPU ms a token best of two: 1.846 against the rule's 1.896 and
# 1.902 (a second identical setting); 32 threads staged 1.903, 128 unstaged 1.961. (The H200's
# native chain sweep of 2026-12-01 had the kernel alone 5% faster at one row a thread: 11.1
# against 11.7 us.)
SHAPE_PLANS = {("f16", 2048, 4096): (2, 64, False)}


def choices(dev, fmt, K, N, M, G=1, rpt=None, tpr=None, stage=None, xproj=False):
    """(rpt, tpr, staged) of a decode mat-vec over G matrices of up to N rows by K inputs and M
    x rows: the values given win, then MAMBAWEB_MATVEC_PLAN's entry for (fmt, N, K), then
    SHAPE_PLANS', then the rules (rows_per_thread, rows_per_thread_group, stage_x). xproj:
    Mamba-1's in_proj with x_proj's shares folded in (matvec's xproj)."""
    plan = planned(fmt, N, K)
    if plan is None and rules_of(fmt) == fmt:     # not under MAMBAWEB_MATVEC_RULE=older
        plan = SHAPE_PLANS.get((fmt, N, K))
    if plan is not None:                      # a bench variant's per-matrix choice
        rpt, tpr = rpt or plan[0], tpr or plan[1]
        stage = plan[2] if stage is None else stage
    rpt = rows_per_thread(dev, N, M, rpt, fmt)
    tpr = tpr or rows_per_thread_group(fmt, K, N, rpt, dev, G, xproj)
    return rpt, tpr, stage_x(dev, M, stage, fmt, N, tpr)


def matvec_conv_ok(device):
    """Whether the in_proj mat-vec with the conv step folded in (matvec_forward_conv) fits."""
    return storage_bindings(device) >= CONV_STORAGE_BUFFERS


XPROJ_STORAGE_BUFFERS = 10   # matvec_forward_conv_xproj: the conv entry's, x_proj's rows through W_2's
XPROJ_FORMATS = ("f32", "f16", "bf16", "q8", "q4")   # whole 16-byte chunks of one row (lib/matvec_xproj.wgsl)
CHUNK_VALUES = {"f32": 4, "f16": 8, "bf16": 8, "q8": 16, "q4": 32}
# The formats whose fold the rule takes unforced and ungathered (where XPROJ_MAX_LOADS allows),
# as measured. q8 (its share sums times each x_proj row's scale) since 2026-12-06: through Dawn
# on an H100, one process, one loaded model (`tools/device/gpu_session.sh --rest`:
# tools/ab_decode --models mamba130m --tokens 128 --rounds 2), mamba-130m q8 folded 0.459 and
# 0.482 ms of GPU a token (76 dispatches), 1,467 and 1,430 tok/s streamed, against 0.510 and
# 0.516 unfolded (100), 979 and 1,173 (the Node host paced both). q4 (each chunk's terms times
# its group's scale; blocks of 32 channels: two rows a thread) only forced or gathered
# (gather_rule takes every format): at mamba-130m its plain fold at two rows a thread took 0.534
# and 0.538 ms against 0.485 and 0.543 unfolded in the same call -- no gain.
XPROJ_RULE_FORMATS = ("f32", "f16", "bf16", "q8")


# The scan step sums the P shares of x_proj's Q = ceil(O / 4) vec4s per sequence in every
# workgroup, 128 / Q threads to a vec4: up to this many loads per thread the fold is taken (by
# rule; MAMBAWEB_FUSE_XPROJ=1 takes it wherever it fits, =0 nowhere). Measured through Dawn on
# an H200, side by side in one process (f16, in_proj at 32 threads a row): mamba-130m (P = 192,
# Q = 20: 32 loads; 16 at XPROJ_TPR) 0.485-0.493 ms of GPU a token against 0.515-0.516 without
# the fold; mamba-1.4b (P = 256, Q = 40: 86 loads) 1.767 against 1.546 -- every one of 512 scan
# workgroups waiting on 11 rounds of loads. Larger blocks at 1.4b (more rows a thread, fewer
# shares) were slower still -- by our reading the in_proj lengthens more than the sum shortens
# (2026-12-04, tools/ab_decode, one process): f16 unfolded 1.552 ms, folded at 16 channels
# 1.740, 32 (2 rows a thread, 16 threads a row) 1.631, 32 (4 rows, 32 threads) 1.681, 64 (4
# rows, 16 threads) 1.875; f32 2.139 against 2.355, 2.282, 2.299, 2.773.
XPROJ_MAX_LOADS = 32
# The folded in_proj's threads a row by rule (the fewest: the most channels a workgroup, the
# fewest shares to sum). mamba-130m f16 through Dawn, side by side in one process, at 16 / at
# the unfolded rule's 32: 0.4685 / 0.4853 and 0.4702 ms of GPU a token, then 0.4811 and 0.4805
# / 0.4884 and 0.4914 (two calls; 96 shares to sum instead of 192); as the rule, 0.4612 and
# 0.4605 / 0.4737 and 0.4692 (a third). Two or four rows a thread (32 or 64 channels, 48 or 24
# shares; `MAMBAWEB_MATVEC_PLAN=1536x768=2/16/-`, `4/16`) measured slower: 0.488 and 0.604
# against 0.450-0.459 (2026-12-03).
XPROJ_TPR = 16


def xproj_block(dev, fmt, K, Ns, M, O, rule=True):
    """The channels per workgroup (CB) of Mamba-1's in_proj + conv step with x_proj's shares
    folded in (lib/matvec_xproj.wgsl), or None where that kernel does not apply: a format
    without whole chunks per block, CB not a multiple of the format's chunk, more than 64
    values of u per workgroup, O (x_proj's rows) over 512, fewer than 10 storage bindings, or
    (rule) more than XPROJ_MAX_LOADS loads per thread for the scan step's sum of the shares --
    of the group totals where the shares are gathered (xproj_group).
    Ns: [I, I] (x and z halves of in_proj)."""
    if (fmt not in XPROJ_FORMATS or O > 512 or len(Ns) != 2
            or storage_bindings(dev) < XPROJ_STORAGE_BUFFERS):
        return None
    rpt, tpr, _ = choices(dev, fmt, K, max(Ns), M, len(Ns), xproj=True)
    cb = THREADS // tpr * rpt
    cv = CHUNK_VALUES[fmt]
    if cb % cv or Ns[0] % cv or M * cb > 64:
        return None
    if rule:
        P = -(-Ns[0] // cb)
        F = xproj_group(dev, M, O, P, fmt)
        if fmt not in XPROJ_RULE_FORMATS and not F:
            return None
        summed = -(-P // F) if F else P      # what the scan step sums: totals or shares
        if scan_sum_loads(summed, O) > XPROJ_MAX_LOADS:
            return None
    return cb


def scan_sum_loads(summed, O):
    """Loads a thread of the scan step's sum of `summed` rows of O x_proj outputs (each read as
    ceil(O / 4) vec4s, 128 threads sharing them: lib/selective_scan_step_body.wgsl)."""
    return -(-summed // (128 // -(-O // 4)))


# The shares' gathering (lib/matvec_xproj_gather.wgsl): a group's shares pass through the staged
# x's workgroup memory, 4 * TILE values.
GATHER_VALUES = 4 * 512
GATHER_MAX = 16


def xproj_group(dev, M, O, P=None, fmt=None):
    """Shares a gathered group of Mamba-1's folded x_proj (lib/matvec_xproj_gather.wgsl: the
    group's last workgroup to store its shares adds them up, and the scan step sums the groups'
    totals), or 0 where they are not gathered (the scan sums every share). `device.xproj_gather`
    or MAMBAWEB_XPROJ_GATHER: 0 (off), 1 (the largest group that fits) or a group size 2..16;
    else the rule (gather_rule: P shares of in_proj's blocks, fmt its format). The largest
    group: a power of two up to GATHER_MAX whose M * O values fit GATHER_VALUES."""
    fit = 1
    while fit < GATHER_MAX and 2 * fit * M * O <= GATHER_VALUES:
        fit *= 2
    v = pick(dev, "xproj_gather", "MAMBAWEB_XPROJ_GATHER", range(0, GATHER_MAX + 1),
             lambda: gather_rule(fmt, P, O))
    if v == 0 or fit < 2:
        return 0
    return fit if v == 1 else min(v, fit)


def gather_rule(fmt, P, O):
    """1 (gather, in the largest groups) where the plain fold's scan step would sum more than
    XPROJ_MAX_LOADS loads a thread of shares -- where the rule refuses the plain fold -- in
    every format; else 0. For q4, whose plain fold the rule never takes, that is a stand-in for
    "a sum as long as mamba-1.4b's", where gathering was measured to pay; a shape with a
    shorter sum keeps it unfolded (mamba-130m; at 790m with 1-2 sequences, gathered with 3-4,
    untimed) and q8 plainly folded (XPROJ_RULE_FORMATS). Measured through Dawn on an H200, side
    by side in one process (2026-12-05, `tools/device/gpu_session.sh --gather`): mamba-1.4b f16
    (P 256, O 160) gathered 1.666 ms of GPU a token against 1.815 unfolded (148 against 196
    dispatches); q4 there 1.582 against 1.573 (its fold reads in_proj at 16 threads a row; not
    taken by rule then); mamba-130m f16 (P 96, O 80, the plain fold by rule) gathered 0.539
    against the plain fold's 0.462 (unfolded 0.482). q8 and q4 since 2026-12-06 (H100 through
    Dawn, one process, `gpu_session.sh --gather-q`): at mamba-1.4b gathered / unfolded, GPU ms
    a token q8 1.669, 1.672 / 1.662, 1.691 and q4 1.544, 1.561 / 1.598, 1.593, streamed tok/s
    q8 578, 580 / 528, 540 and q4 616, 564 / 538, 491 (f16 beside them 552): 48 commands a
    token fewer for the Node host to encode, which paced q8's stream (5.9-6.2 us a command)."""
    if fmt not in XPROJ_FORMATS or P is None:
        return 0
    return int(scan_sum_loads(P, O) > XPROJ_MAX_LOADS)


def xproj_early(dev):
    """Whether Mamba-1's folded in_proj loads x_proj's chunks for its shares at the kernel's
    start rather than after the rows are summed (XP_EARLY in lib/matvec_xproj.wgsl: the same
    bits). `device.xproj_early` (tests), else MAMBAWEB_XPROJ_EARLY = 1 | 0 (bench variants),
    else on. Through Dawn on an H100, one process, one loaded model (`tools/device/
    gpu_session.sh --tune16`, 2026-12-06: tools/ab_decode --tokens 128 --rounds 2), mamba-1.4b
    f16 (gathered fold) GPU ms a token best of two: 1.842 with, 1.896 and 1.902 without (two
    identical settings): a memory wait off the dispatch's tail, 1.1 us a layer. With
    SHAPE_PLANS' out_proj, side by side with neither (`gpu_session.sh --confirm`, 2026-12-06):
    1.742-1.759 against 1.878-1.884."""
    from py_engine.ops.step_kernels import choose
    return choose(dev, "xproj_early", "MAMBAWEB_XPROJ_EARLY", "1", "0", lambda: True)


def xproj_words(M, P, F, O):
    """u32 words of the gathered fold's buffer (lib/matvec_xproj_gather.wgsl): totals [M, PG,
    O4], shares [M, P, O4], a count a group and the give-up count."""
    O4 = -(-O // 4) * 4
    PG = -(-P // F)
    return M * PG * O4 + M * P * O4 + PG + 1


def conv_binding(x, cw, cb):
    """(binding, CONV_WO, CONV_BO) through which matvec_forward_conv reads the conv's weight and
    bias (lib/matvec_rows.wgsl): the norm weight's binding when x is normalised in the kernel,
    spanning the norm weight, conv1d.weight and conv1d.bias packed after it at load
    (decode_param_packs), else a binding from the conv weight on; the offsets are elements of
    that binding. None where they do not lie so in one buffer (the conv step then runs apart)."""
    from py_engine.ops.weight_pack import one_binding
    norm = _norm_weight(x)
    ts = ([norm] if norm is not None else []) + [cw] + ([cb] if cb is not None else [])
    if any(not isinstance(t, Tensor) or t.dtype != "f32" for t in ts):
        return None
    one = one_binding(ts)
    offs = [o for o, _ in one[1]] if one is not None else None
    if offs is None or offs[0] != 0 or any(o % 4 for o in offs):   # from the first, whole vec4s
        return None
    (buf, base, size) = one[0]
    size = min(-(-size // 16) * 16, buf.size - base)   # whole vec4s (nw's element type)
    return (buf, base, size), offs[-2 if cb is not None else -1], offs[-1] if cb is not None else 0


def xproj_rows_binding(w_dt, w_b, w_c):
    """(binding from x_proj's dt rows through its C rows, B's first 16-byte chunk, C's) where
    the three row blocks lie in that order in one buffer (nn/mamba1.decode_packs packs them at
    load), else None: matvec_forward_conv_xproj reads all three through W_2's binding."""
    from py_engine.ops.weight_pack import one_binding
    if any(not isinstance(t, Tensor) for t in (w_dt, w_b, w_c)):
        return None
    one = one_binding([w_dt, w_b, w_c])
    offs = [o for o, _ in one[1]] if one is not None else None     # 4-byte words
    if offs is None or not offs[0] == 0 < offs[1] < offs[2] or offs[1] % 4 or offs[2] % 4:
        return None
    return one[0], offs[1] // 4, offs[2] // 4                        # 16-byte chunks


def _norm_weight(x):
    """The norm weight matvec's kernel applies to x on the fly (_norm_input's), or None."""
    if isinstance(x, NormedRows) and x.w is not None and x.x.shape[-1] % 4 == 0:
        return x.w
    return None


def _norm_input(batch, x):
    """(norm weight or None, eps, the rows): an ops.rmsnorm.NormedRows whose norm the kernel
    applies on the fly (NORMED), else x as it is (a weightless norm runs its own kernel)."""
    if isinstance(x, NormedRows):
        if x.w is not None and x.x.shape[-1] % 4 == 0:
            return x.w, x.eps, x.x
        return None, 0.0, x.materialize(batch)
    return None, 0.0, x


def _constants(dev, fmt, M, rpt, tpr, staged, normed, **more):
    """The mat-vec pipeline's override constants (lib/matvec_rows.wgsl) for these choices."""
    consts = {"TPR": tpr, "MR": M, "RPT": rpt, "NORMED": int(normed),
              "PREFETCH": prefetch_level(dev), "TAIL": int(tail_trip(dev)), "STAGE": int(staged),
              "SG": int(subgroup_tree(dev)),
              "NORM_IN_STAGE": int(staged and normed and norm_in_stage(dev)), **more}
    if fmt == "q4":
        consts["SCALE_WORD"] = int(scale_word(dev))
    return consts


def matvec(batch, x, ws, ys, M, bias=None, accumulate=False, tpr=None, conv=None, rpt=None,
           stage=None, gate=None, relu2=False, xproj=None, norm_groups=0, gate_after_norm=False):
    """ys[g] (+)= x[M, K] @ ws[g]^T (+ bias, g = 0 only) for up to 3 weights of one format.
    x may be an ops.rmsnorm.NormedRows: the kernel normalises it on the fly. tpr: threads per
    row, overriding rows_per_thread_group; rpt: rows per thread, overriding rows_per_thread;
    stage: x staged in workgroup memory, overriding stage_x (all three for
    tools/sweep_matvec.py).
    gate z [M, K] (no bias): the input is x * silu(z) (Mamba-3's gate), and with x a NormedRows
    Mamba-2's gated norm, RMSNorm(x * silu(z)) * w over the whole row (one group).
    relu2: the input is relu(x)^2 (NemotronH's MLP activation before down_proj).
    norm_groups G (with a gate and x a NormedRows, one x row): the norm is over each of G
    groups of K/G inputs -- RMSNorm_g(x * silu(z)) * w (Mamba-2's gated norm with n_groups G),
    or with gate_after_norm RMSNorm_g(x) * w * silu(z) (Mamba-3's out-projection norm, a group
    a head) -- applied while x is staged (NORM_GROUPS in lib/matvec_rows.wgsl).
    conv (conv_w [Ng, DCONV], conv_b [Ng] or None, state [M, Ng, DCONV], g): ys[g] gets
    silu(causal conv step) of its projection instead (Mamba-1's in_proj x half, Mamba-2's x|B|C
    block; the state is shifted in place, as ops.conv1d.conv1d_step does), one dispatch for all.
    xproj (w_dt [R, I], w_B [S, I], w_C [S, I], shares, S, F): with conv on block 0 of two
    (Mamba-1), each workgroup of the conv block also writes its channels' share of x_proj's
    outputs (lib/matvec_xproj.wgsl; xproj_block says where it applies and P; O4 is R + 2S
    rounded up to a multiple of 4): shares [M, P, O4], or with F (xproj_group) > 0 the
    gathered fold's zeroed words (xproj_words; lib/matvec_xproj_gather.wgsl), whose first
    [M, ceil(P / F), O4] are then the group totals."""
    from py_engine.ops.conv1d import rw_dummy
    dev = batch.device
    conv_x = x
    norm, eps, x = _norm_input(batch, x)
    fmt = ws[0].dtype
    K = ws[0].shape[1]
    if any(w.dtype != fmt or w.shape[1] != K for w in ws) or len(ws) > 3 or M > 4:
        raise ValueError("matvec: weights must share format and K, at most 3 of them, M <= 4")
    Ns = [w.shape[0] for w in ws] + [0] * (3 - len(ws))
    grouped = {}
    if norm_groups or gate_after_norm:
        G = norm_groups or 1
        if (norm is None or gate is None or M != 1 or K % (4 * G) or G > THREADS
                or conv is not None or xproj is not None):
            raise ValueError(f"matvec: norm groups need a normalised, gated x of one row whose "
                             f"{K} inputs split into {G} groups of whole vec4s (at most "
                             f"{THREADS} groups)")
        L = 1
        while 2 * L * G <= THREADS:
            L *= 2
        grouped = {"NORM_GROUPS": G, "NORM_GS4": K // (4 * G), "NORM_L": L,
                   "GATE_AFTER_NORM": int(bool(gate_after_norm)),
                   "NORM_IN_STAGE": 0}            # the groups' sums come before the staging
        stage = True                          # the groups' 1/rms multiply x as it is staged
    flags = (1 if bias is not None else 0) | (2 if accumulate else 0) | (4 if norm is not None else 0)
    u = dev.uniform(params(M, Ns[0], K, flags, len(ws), Ns[1], Ns[2], float(eps)))
    rpt, tpr, staged = choices(dev, fmt, K, max(Ns), M, len(ws), rpt, tpr, stage,
                               xproj=xproj is not None)
    consts = _constants(dev, fmt, M, rpt, tpr, staged, norm is not None,
                        GATED=int(gate is not None), RELU2=int(bool(relu2)), **grouped)
    if (gate is not None and (bias is not None or conv is not None or gate.numel != M * K)) or \
            (relu2 and (gate is not None or norm is not None)):
        raise ValueError(f"matvec: a gate must be [{M}, {K}] and takes no bias or conv; relu2 "
                         "takes neither a gate nor a norm")
    gx, gy = fold(-(-max(Ns) // (THREADS // tpr * rpt)))
    wb = [w.binding for w in ws] + [dummy(dev)] * (3 - len(ws))
    yb = [y.binding for y in ys] + [rw_dummy(dev, slot) for slot in range(3 - len(ws))]
    aux = bias if bias is not None else gate       # binding 3: the bias, or the gate z
    res = [u, x.binding, wb[0], aux.binding if aux is not None else dummy(dev), yb[0],
           wb[1], wb[2], yb[1], yb[2], norm.binding if norm is not None else dummy(dev)]
    if conv is None:
        batch.run(f"matvec_{fmt}", "matvec_forward", res, gx, gy, len(ws), constants=consts)
        return
    cw, cb, state, cg = conv
    dconv = cw.shape[1]
    if accumulate or cg >= len(ws) or tuple(cw.shape) != (Ns[cg], dconv) or \
            state.numel != M * Ns[cg] * dconv:
        raise ValueError(f"matvec conv: weight {list(cw.shape)} and state {list(state.shape)} "
                         f"do not fit {M} rows of block {cg}'s channels")
    flags |= 8 if cb is not None else 0
    packed = conv_binding(conv_x, cw, cb)
    if packed is None:
        raise ValueError("matvec conv: the conv's weight and bias must lie after the norm "
                         "weight in one buffer (decode_param_packs, packed at load): "
                         "conv_binding")
    res[9] = packed[0]                   # the norm weight, the conv weight and bias
    conv_res = [None, None, state.binding]
    consts = dict(consts, DCONV=dconv, CONV_G=cg, CONV_WO=packed[1], CONV_BO=packed[2])
    if xproj is None:
        u = dev.uniform(params(M, Ns[0], K, flags, len(ws), Ns[1], Ns[2], float(eps)))
        res[0] = u
        batch.run(f"matvec_{fmt}", "matvec_forward_conv", res + conv_res, gx, gy, len(ws),
                  constants=consts)
        return
    w_dt, w_b, w_c, shares, S, F = xproj
    I, R = Ns[0], w_dt.shape[0]
    blk = THREADS // tpr * rpt
    P = -(-I // blk)
    O = R + 2 * S
    words = xproj_words(M, P, F, O) if F else M * P * (-(-O // 4) * 4)
    if (len(ws) != 2 or cg != 0 or dconv != 4 or bias is not None
            or any(w.dtype != fmt or w.shape[1] != I for w in (w_dt, w_b, w_c))
            or w_b.shape[0] != S or w_c.shape[0] != S
            or xproj_block(dev, fmt, K, Ns[:2], M, O, rule=False) != blk
            or (F and (F < 2 or F * M * O > GATHER_VALUES))
            or shares.numel != words):
        raise ValueError(f"matvec xproj: x_proj pieces {[list(w.shape) for w in (w_dt, w_b, w_c)]} "
                         f"and shares {list(shares.shape)} do not fit in_proj's {I} channels "
                         f"in blocks of {blk}")
    rows = xproj_rows_binding(w_dt, w_b, w_c)
    if rows is None:
        raise ValueError("matvec xproj: x_proj's dt, B and C rows must lie side by side in one "
                         "buffer (nn/mamba1.decode_packs, packed at load): xproj_rows_binding")
    # p.N2 carries R (the dt rows at W_2's binding; the grid's z stays 2, so no W_2 rows run)
    u = dev.uniform(params(M, Ns[0], K, flags, len(ws), Ns[1], R, float(eps)))
    res[0] = u
    res[6], res[8] = rows[0], shares.binding
    consts = dict(consts, XN=S, XB_OFF=rows[1], XC_OFF=rows[2], XP_EARLY=int(xproj_early(dev)))
    if F:
        batch.run(f"matvec_{fmt}_gather", "matvec_forward_conv_xproj_gather", res + conv_res,
                  gx, gy, len(ws), constants=dict(consts, XP_F=F))
        return
    batch.run(f"matvec_{fmt}", "matvec_forward_conv_xproj", res + conv_res, gx, gy, len(ws),
              constants=consts)


MAX_PIECES = 8      # lib/matvec_rows.wgsl's piece table


def side_by_side(ts, unit):
    """(binding, [each tensor's start in `unit`-byte words from the binding's start]) of tensors
    that share one buffer (py_engine/ops/weight_pack.py lays weights out so; a caller lays
    outputs out so), or None where they do not, or a start is not a whole word."""
    buf = ts[0].buffer
    if buf is None or any(t.buffer is not buf for t in ts):
        return None
    start = min(t.offset for t in ts)
    end = max(t.offset + t.nbytes for t in ts)
    if any((t.offset - start) % unit for t in ts):
        return None
    return (buf, start, end - start), [(t.offset - start) // unit for t in ts]


def matvec_pieces(batch, x, ws, ys, M, rpt=None, tpr=None, stage=None):
    """ys[i] = x[M, K] @ ws[i]^T for up to MAX_PIECES bias-free weights of one format and K
    that lie side by side in one buffer (weight_pack.pack_rows), into f32 outputs [M, N_i]
    that lie side by side in another, in ONE dispatch (matvec_forward_pieces in
    lib/matvec_rows.wgsl; matvec takes at most 3 matrices, each bound on its own). x may be an
    ops.rmsnorm.NormedRows. The choices (rows a thread, threads a row, staging) are those of
    one matrix of all the pieces' rows."""
    from py_engine.ops.conv1d import rw_dummy
    dev = batch.device
    norm, eps, x = _norm_input(batch, x)
    fmt, K = ws[0].dtype, ws[0].shape[1]
    Ns = [w.shape[0] for w in ws]
    wpl = side_by_side(ws, 16)
    ypl = side_by_side(ys, 4)
    if (any(w.dtype != fmt or w.shape[1] != K or len(w.shape) != 2 for w in ws)
            or not 1 <= len(ws) <= MAX_PIECES or len(ys) != len(ws) or M > 4
            or any(y.dtype != "f32" or y.numel != M * n for y, n in zip(ys, Ns))
            or wpl is None or ypl is None):
        raise ValueError(f"matvec_pieces: 1..{MAX_PIECES} weights of one format and K side by "
                         f"side in one buffer, f32 outputs [M, N_i] side by side in another, "
                         f"M <= 4; got {[(w.dtype, list(w.shape)) for w in ws]} -> "
                         f"{[list(y.shape) for y in ys]}")
    rpt, tpr, staged = choices(dev, fmt, K, sum(Ns), M, 1, rpt, tpr, stage)
    per = THREADS // tpr * rpt                # rows a workgroup
    table, first = [], 0
    for n, wb, yb in zip(Ns, wpl[1], ypl[1]):
        table += [first, n, wb, yb]
        first += -(-n // per)
    table += [0] * (4 * MAX_PIECES - len(table))
    pt = dev.uniform(params(len(ws), first, 0, 0, *table))
    u = dev.uniform(params(M, Ns[0], K, 4 if norm is not None else 0, 1, 0, 0, float(eps)))
    gx, gy = fold(first)
    res = [u, x.binding, wpl[0], dummy(dev), ypl[0], dummy(dev), dummy(dev), rw_dummy(dev, 0),
           rw_dummy(dev, 1), norm.binding if norm is not None else dummy(dev)]
    res += [None] * 5 + [pt]
    batch.run(f"matvec_{fmt}", "matvec_forward_pieces", res, gx, gy, 1,
              constants=_constants(dev, fmt, M, rpt, tpr, staged, norm is not None, PIECES=1))
