"""Linear layer products on the strided matmul kernel (shaders/matmul.wgsl; the bias
gradient: shaders/linear_backward.wgsl).

  forward : y[M,N] = x[M,K] @ W[N,K]^T + b[N]
  backward: dx[M,K] = dy[M,N] @ W[N,K];  dW[N,K] = dy^T @ x;  db[N] = sum_rows dy
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import (ACCUMULATE, ADD_BIAS, dummy, fold, out_like, params, rows_of,
                                   workgroup_storage)
from py_engine.ops import step_kernels, weight_format
from py_engine.ops.lora import adapter_of, branch_forward
from py_engine.ops.loop_budget import ALIGN_ROWS, shifted, spans, window_len
from py_engine.ops.rmsnorm import NormedRows

TILE = 32  # each 8x8 workgroup computes a 32x32 block of C (4x4 per thread)
MATVEC_MAX_M = 4     # up to this many rows, y = x @ W^T goes through the matvec kernel
MATVEC_ROWS = 8      # output rows per matvec workgroup


def _matvec_ok(dev):
    """The matvec kernels on real GPUs only. On a software adapter (SwiftShader) their
    subgroup ops and barriers are emulated: measured in Chromium here, decode at d256x4 ran
    0.96 tok/s with it (256 threads), 8.5 (64 threads) and 56.5 with the tiled matmul.
    `device.force_matvec` (tests on a CPU Vulkan driver) takes them anyway."""
    return getattr(dev, "force_matvec", False) or step_kernels.subgroup_gpu(dev)


def _rows_kernel(dev, K):
    """f32 weights through the 16-byte-chunk matvec (weight_format.matvec) instead of the
    scalar 8-rows-per-workgroup one: MAMBAWEB_MATVEC=rows|classic (device.matvec_kernel)."""
    kind = getattr(dev, "matvec_kernel", None)
    if kind is None:
        import os
        kind = dev.matvec_kernel = os.environ.get("MAMBAWEB_MATVEC", "rows")
    return kind == "rows" and K % 4 == 0


def _matvec_constants(dev):
    """Threads per matvec workgroup: 256 unless the device (or MAMBAWEB_MATVEC_THREADS, for
    experiments on the native backend) says otherwise."""
    n = getattr(dev, "matvec_threads", None)
    if n is None:
        import os
        n = int(os.environ.get("MAMBAWEB_MATVEC_THREADS", "256"))
        dev.matvec_threads = n
    return {"THREADS": n}


def _tiled_ok(dev):
    """The shared-memory tiled GEMM (shaders/matmul_tiled.wgsl) on real GPUs; software adapters
    keep the register-only kernel, which is faster there (barriers cost 15-30x on SwiftShader).
    `device.force_tiled_matmul` (tests on SwiftShader / lavapipe) takes it anyway;
    MAMBAWEB_MATMUL=classic turns it off (experiments)."""
    forced = getattr(dev, "force_tiled_matmul", None)
    if forced is not None:
        return bool(forced)
    import os
    if os.environ.get("MAMBAWEB_MATMUL", "tiled") == "classic":
        return False
    return not dev.info.get("is_fallback")


# 128x128 tiles when both sides of C have at least this many rows/columns, else 64x64; too few
# tiles are made up by split-K. Measured on an H200 (tools/sweep_matmul.py, mamba-1.4b prefill
# shapes at 1024 tokens): 128 + split-K beat 64 on every product, e.g. out_proj 1277 vs 1568 us.
BIG_TILE_MIN_SIDE = 65
SPLIT_TARGET_GROUPS = 256  # split K until C's tiles x slices reach this (~2 per SM on an H200)
SPLIT_MAX = 8              # slices at most (MAMBAWEB_SPLIT_TARGET / _MAX: bench variants)
# Side by side natively on the H200 (mamba-1.4b f32, 1,024 tokens, every multi-weight GEMM on;
# 2026-12-02): prefill 8,225 tok/s at target 264, 8,206 at SPLIT_MAX 16, 7,939 at target 128
# (out_proj unsplit), 8,236 at target 512. With the 16-byte-staged kernel (eleventh session),
# target 256 against 264: 9,117 against 8,857 (one call): mamba-1.4b's in_proj halves (256
# tiles, 97% of the two-per-SM slots) no longer write, re-read and reduce two K slices'
# partials, and out_proj's 128 tiles take 2 slices (one wave of 256) instead of 3 (1.45).
SPLIT_K = 16               # matmul_tiled.wgsl's flag: write slice partials
TILED_PASSES_PER_K = 8    # loop passes of the busiest thread per k (generous: ~2.5 counted)


def _split_count(dev, M, N, K, groups):
    """Slices of K run side by side (split-K) when C has too few tiles to fill a real GPU:
    enough that groups * S reaches SPLIT_TARGET_GROUPS, each slice at least 256 deep, at most
    SPLIT_MAX, and the partials [S, M, N] within one binding."""
    target = step_kernels.pick(dev, "split_target", "MAMBAWEB_SPLIT_TARGET",
                               (128, 256, 264, 384, 512, 1024), lambda: SPLIT_TARGET_GROUPS)
    most = step_kernels.pick(dev, "split_max", "MAMBAWEB_SPLIT_MAX", (2, 4, 8, 16, 32),
                             lambda: SPLIT_MAX)
    if groups >= target or K < 512 or dev.info.get("is_fallback") and \
            not getattr(dev, "force_split_k", False):
        return 1
    s = min(most, -(-target // groups), K // 256)
    limit = getattr(dev, "limits", {}).get("maxStorageBufferBindingSize", 1 << 27)
    while s > 1 and s * M * N * 4 > limit:
        s -= 1
    return max(1, s)


def _tiles(M, N):
    """(tile side, tiles) of a tiled GEMM's C [M, N]. MAMBAWEB_BIG_TILE_MIN_SIDE replaces
    BIG_TILE_MIN_SIDE (bench variants: e.g. 161 puts mamba-1.4b's x_proj, 160 columns, on the
    64 tile, where the 128 tile computes 256 columns for its 160)."""
    import os
    env = os.environ.get("MAMBAWEB_BIG_TILE_MIN_SIDE", "").strip()
    if env and not env.isdigit():
        raise ValueError(f"MAMBAWEB_BIG_TILE_MIN_SIDE must be a whole number, got {env!r}")
    bm = 128 if min(M, N) >= (int(env) if env else BIG_TILE_MIN_SIDE) else 64
    return bm, (-(-M // bm)) * (-(-N // bm))


def _kk_ok(dev, bm, K, strides, multi):
    """Whether a 128-tile product of x @ W^T runs on the 16-byte-staged kernel
    (shaders/matmul_tiled_kk.wgsl): x [M, K] and W [N, K] both contiguous rows of K (every
    forward caller's layout; the kernel reads rows sa0 / sb1 apart, but only this is tested),
    K a positive multiple of its 16-deep steps, and the device's workgroup memory holds its
    padded staged rows (KK_BYTES; WebGPU's default 16 KiB does not: the scalar kernel then).
    `device.tiled_kk` (tests), else MAMBAWEB_TILED_KK = 1 | 0 (bench variants), else natively
    (wgpu) only. On an H200 with both kernels' k loops written out, us at mamba-1.4b's in_proj /
    out_proj at 1,024 tokens, kk against scalar: natively 924 / 502 against 1,046 / 545; through
    Dawn (Chrome's WebGPU) 1,263 / 678 against 1,148 / 631 with its staged arrays sized by a
    pipeline override, and with them constant-sized (thirteenth session, `mambaweb bench --dawn
    --only prefill_gemm`, which times both whatever the rule) still 1,216 / 695 against
    1,143 / 648 (x_proj 223 against 155, dt_proj 100 against 90) -- so the browser keeps the
    scalar kernel; the whole 1.4b prefill through Dawn with kk forced on: 9,757 against 9,931
    tok/s."""
    if multi is not None or bm != 128 or K < 16 or K % 16 or tuple(strides) != (K, 1, 1, K):
        return False
    if workgroup_storage(dev) < KK_BYTES:
        return False
    return step_kernels.choose(dev, "tiled_kk", "MAMBAWEB_TILED_KK", "1", "0",
                               lambda: dev.info.get("backend") == "native")


KK_BYTES = 2 * 16 * 33 * 16   # the kk kernel's two staged slices (rows of 33 vec4 cells)


def _matmul_tiled(batch, a, b, c, M, N, K, strides, bias_res, flags, multi=None):
    """C[M, N] (+)= A @ B (+ bias) on shaders/matmul_tiled.wgsl. multi (N0, N1, ws, ys): C's
    columns are up to three weights' rows side by side (shaders/matmul_tiled_multi.wgsl; b is
    W_0 and c is Y_0, ws the bindings of W_1 and W_2, ys of Y_1 and Y_2); no bias then.
    x @ W^T in 128 tiles: shaders/matmul_tiled_kk.wgsl (same sums, 16-byte staging loads);
    its split-K partials are summed by matmul_tiled's reduce."""
    dev = batch.device
    sa0, sa1, sb0, sb1 = strides
    shader, (N0, N1, ws, ys) = ("matmul_tiled", (0, 0, [], [])) if multi is None else \
        ("matmul_tiled_multi", multi)
    bm, groups = _tiles(M, N)
    entry = f"matmul_tiled_{bm}"
    kk = _kk_ok(dev, bm, K, strides, multi)
    tiled = ("matmul_tiled_kk", "matmul_tiled_128_kk") if kk else (shader, entry)
    S = _split_count(dev, M, N, K, groups)
    if S > 1:
        ks = -(-K // S)
        ks += -ks % 16                        # whole staging steps per slice
        S = -(-K // ks)
        part = Tensor(dev, (S * M * N,))
        u = dev.uniform(params(M, N, K, SPLIT_K, sa0, sa1, sb0, sb1, ks, N0, N1))
        batch.run(*tiled, [u, a.binding, b.binding, bias_res, part.binding] + ws + ys,
                  -(-N // bm), -(-M // bm), S)
        u = dev.uniform(params(M, N, S, flags, 0, 0, 0, 0, 0, N0, N1))
        gx, gy = fold(-(-(M * N) // 256))
        outs = [dummy(dev), bias_res, c.binding] + ([] if multi is None else [None, None] + ys)
        batch.run(shader, "matmul_split_reduce", [u, part.binding] + outs, gx, gy)
        part.release()                    # reused only after this product in queue order
        return
    # lavapipe's loop-pass cap (ops/loop_budget.py) when the kernel is forced there: windows of K
    kspans = spans(K, window_len(TILED_PASSES_PER_K, fixed=64, align=ALIGN_ROWS)) \
        if dev.info.get("is_fallback") else [(0, K)]
    for k0, kn in kspans:
        f = flags if k0 == 0 else (flags & ~ADD_BIAS) | ACCUMULATE
        u = dev.uniform(params(M, N, kn, f, sa0, sa1, sb0, sb1, kn, N0, N1))
        # W_1, W_2 walk K as W_0 does (a dummy for a missing W_2 is a bare buffer: left)
        wk = [shifted(w, 4 * k0 * sb0) if isinstance(w, tuple) else w for w in ws]
        batch.run(*tiled,
                  [u, shifted(a.binding, 4 * k0 * sa1), shifted(b.binding, 4 * k0 * sb0),
                   bias_res, c.binding] + wk + ys, -(-N // bm), -(-M // bm))


def matmul(batch, a, b, c, M, N, K, strides, bias=None, accumulate=False):
    """C[M,N] (+)= A @ B (+ bias) with A[i,k] = a[i*sa0 + k*sa1], B[k,j] = b[k*sb0 + j*sb1]."""
    dev = batch.device
    flags = (ADD_BIAS if bias is not None else 0) | (ACCUMULATE if accumulate else 0)
    sa0, sa1, sb0, sb1 = strides
    decode_shape = M <= MATVEC_MAX_M and (sa0, sa1, sb0, sb1) == (K, 1, 1, K) and _matvec_ok(dev)
    if isinstance(a, NormedRows) and not (decode_shape and (b.dtype != "f32" or _rows_kernel(dev, K))):
        a = a.materialize(batch)          # only the 16-byte-chunk matvec folds the norm in
    if b.dtype != "f32":
        # a narrow weight (py_engine/ops/weight_format.py): read as it is when decoding,
        # else through a temporary f32 copy (released once recorded: later work reuses it
        # only after this GEMM in queue order)
        if decode_shape:
            weight_format.matvec(batch, a, [b], [c], M, bias=bias, accumulate=accumulate)
            return
        tmp = weight_format.dequantize(batch, b)
        matmul(batch, a, tmp, c, M, N, K, strides, bias=bias, accumulate=accumulate)
        tmp.release()
        return
    if decode_shape and _rows_kernel(dev, K):
        weight_format.matvec(batch, a, [b], [c], M, bias=bias, accumulate=accumulate)
        return
    if decode_shape:
        # x @ W^T with few rows (decode): the bandwidth-bound kernel
        from py_engine.ops._common import fold
        u = dev.uniform(params(M, N, K, flags))
        gx, gy = fold(-(-N // MATVEC_ROWS))
        batch.run("matvec", "matvec_forward", [u, a.binding, b.binding,
                                               bias.binding if bias is not None else dummy(dev),
                                               c.binding], gx, gy,
                  constants=_matvec_constants(dev))
        return
    bias_res = bias.binding if bias is not None else dummy(dev)
    if _tiled_ok(dev):
        _matmul_tiled(batch, a, b, c, M, N, K, strides, bias_res, flags)
        return
    # One thread walks all of K: past the loop-pass budget (lavapipe; ops/loop_budget.py) the
    # sum runs as windows of K, each added into C (the bias with the first).
    for k0, kn in spans(K, window_len(1, fixed=32, align=ALIGN_ROWS)):
        f = flags if k0 == 0 else (flags & ~ADD_BIAS) | ACCUMULATE
        u = dev.uniform(params(M, N, kn, f, sa0, sa1, sb0, sb1))
        batch.run("matmul", "matmul_forward",
                  [u, shifted(a.binding, 4 * k0 * sa1), shifted(b.binding, 4 * k0 * sb0),
                   bias_res, c.binding], -(-N // TILE), -(-M // TILE))


def _split(w):
    """Whether `w` is held as row blocks (py_engine/gpu/row_chunks.py)."""
    from py_engine.gpu.row_chunks import RowChunks
    return isinstance(w, RowChunks)


def _chunks():
    from py_engine.ops import row_chunks
    return row_chunks


def raw_linear(batch, x, w, b=None, out=None):
    """x @ w^T + b, never an adapter (LoRA's own A and B products)."""
    N, K = w.shape
    if x.shape[-1] != K:
        raise ValueError(f"linear: x has last dim {x.shape[-1]}, weight expects {K}")
    M = rows_of(x)
    y = out_like(batch.device, tuple(x.shape[:-1]) + (N,), out)
    if _split(w):                 # the LM head of a vocabulary past one binding
        return _chunks().linear(batch, x, w, y, M, bias=b)
    matmul(batch, x, w, y, M, N, K, (K, 1, 1, K), bias=b)
    return y


def linear_forward(batch, x, w, b=None, out=None):
    """x @ w^T + b (+ the LoRA branch when `w` carries an adapter: py_engine/ops/lora.py)."""
    ad = adapter_of(batch.device, w)
    if ad is not None and isinstance(x, NormedRows):
        x = x.materialize(batch)              # the LoRA branch reads x as a tensor
    y = raw_linear(batch, x, w, b, out)
    if ad is not None:
        branch_forward(batch, x, ad, y, rows_of(x))
    return y


def linear_accumulate(batch, x, w, out, bias=None):
    """out += x @ w^T + bias (+ the LoRA branch): the residual add of out_proj-like layers."""
    N, K = w.shape
    M = rows_of(x)
    if _split(w):
        _chunks().linear(batch, x, w, out, M, bias=bias, accumulate=True)
    else:
        matmul(batch, x, w, out, M, N, K, (K, 1, 1, K), bias=bias, accumulate=True)
    ad = adapter_of(batch.device, w)
    if ad is not None:
        branch_forward(batch, x, ad, out, M)
    return out


def linear_backward_input(batch, dy, w, out=None, accumulate=False):
    N, K = w.shape
    M = rows_of(dy)
    dx = out_like(batch.device, tuple(dy.shape[:-1]) + (K,), out)
    if _split(w):
        return _chunks().backward_input(batch, dy, w, dx, M, accumulate=accumulate)
    matmul(batch, dy, w, dx, M, K, N, (N, 1, K, 1), accumulate=accumulate)
    return dx


def linear_backward_weight(batch, dy, x, out=None, accumulate=False):
    N, K = dy.shape[-1], x.shape[-1]
    M = rows_of(dy)
    dw = out_like(batch.device, (N, K), out)
    matmul(batch, dy, x, dw, N, K, M, (1, N, K, 1), accumulate=accumulate)
    return dw


def linear_backward_bias(batch, dy, out=None, accumulate=False):
    dev = batch.device
    N = dy.shape[-1]
    M = rows_of(dy)
    db = out_like(dev, (N,), out)
    # one thread sums a column over all M rows: windows of rows past the loop-pass budget
    for r0, rn in spans(M, window_len(1, fixed=8, align=ALIGN_ROWS)):
        u = dev.uniform(params(rn, N, 0, ACCUMULATE if accumulate or r0 else 0, 0, 0, 0, 0))
        batch.run("linear_backward", "bias_backward",
                  [u, shifted(dy.binding, 4 * r0 * N), None, None, db.binding], -(-N // 64))
    return db


def in_proj_conv_step(batch, x, weights, conv_index, conv_w, conv_b, conv_state):
    """A Mamba layer's decode in_proj with its conv step folded in, or None where that path does
    not apply: [x @ W^T for W in weights] (2 or 3 row blocks of in_proj, one format) except that
    block `conv_index` -- the one the conv reads: Mamba-1's x half, Mamba-2's x|B|C -- comes out
    as silu(its causal conv step), the conv state shifted in place, all in ONE dispatch
    (shaders/lib/matvec_rows.wgsl, matvec_forward_conv) instead of in_proj + conv1d_step.
    Bias-free blocks only: a biased in_proj takes linear_forward per block and conv1d_step (the
    fold with block 0's bias gave wrong logits from the first token on lavapipe, Mamba-1 with
    in_x_b alone; no transformers checkpoint biases one half only). Applies where linear_multi
    takes the weight-streaming mat-vec (_streamed_multi), 10 storage bindings are allowed and
    the norm weight, conv weight and bias lie in one buffer (weight_format.conv_binding);
    `device.fuse_conv_step = False` turns it off (tests)."""
    dev = batch.device
    M = rows_of(x)
    if (not _streamed_multi(dev, x, weights) or not weight_format.matvec_conv_ok(dev)
            or getattr(dev, "fuse_conv_step", True) is False
            or weights[conv_index].shape[0] != conv_w.shape[0]
            or weight_format.conv_binding(x, conv_w, conv_b) is None):
        return None
    outs = [out_like(dev, tuple(x.shape[:-1]) + (w.shape[0],)) for w in weights]
    weight_format.matvec(batch, x, weights, outs, M,
                         conv=(conv_w, conv_b, conv_state, conv_index))
    return outs


def in_proj_conv_xproj_step(batch, x, weights, conv_w, conv_b, conv_state, xproj_w):
    """Mamba-1's decode in_proj + conv step with x_proj folded in, or None where it does not
    apply: in_proj_conv_step's u and z, and instead of x_proj's dispatch (u @ x_proj^T ->
    dt_low, B, C) the conv block's workgroups' shares of it, summed by the scan step
    (selective_scan_step's xpart). xproj_w: x_proj's three row blocks (dt [R, I], B [S, I],
    C [S, I]) in in_proj's format, no adapter. Returns (u, z, (shares [M, P, 4Q], P, Q))
    with Q = ceil((R + 2S) / 4). Taken by rule where the scan's sum of the shares is short
    (weight_format.XPROJ_MAX_LOADS) in the float formats and q8, and where it is long with the shares
    gathered (weight_format.gather_rule: every format); `device.fuse_xproj` True / False (tests), else
    MAMBAWEB_FUSE_XPROJ=1 / 0 (the bench's side by side), takes it wherever it fits / nowhere."""
    import os
    dev = batch.device
    M = rows_of(x)
    w_dt, w_b, w_c = xproj_w
    force = getattr(dev, "fuse_xproj", None)
    if force is None:
        force = {"0": False, "1": True}.get(os.environ.get("MAMBAWEB_FUSE_XPROJ", "").strip())
    if (force is False
            or not _streamed_multi(dev, x, weights) or not weight_format.matvec_conv_ok(dev)
            or getattr(dev, "fuse_conv_step", True) is False
            or weights[0].shape[0] != conv_w.shape[0] or conv_w.shape[1] != 4
            or weight_format.conv_binding(x, conv_w, conv_b) is None
            or weight_format.xproj_rows_binding(*xproj_w) is None
            or any(adapter_of(dev, w) is not None or _split(w) for w in xproj_w)):
        return None
    fmt, K = weights[0].dtype, x.shape[-1]
    I, R, S = weights[0].shape[0], w_dt.shape[0], w_b.shape[0]
    O = R + 2 * S
    Ns = [w.shape[0] for w in weights]
    blk = weight_format.xproj_block(dev, fmt, K, Ns, M, O, rule=force is not True)
    if blk is None or any(w.dtype != fmt or w.shape[1] != I for w in xproj_w):
        return None
    P = -(-I // blk)
    u, z = (out_like(dev, tuple(x.shape[:-1]) + (n,)) for n in Ns)
    Q = -(-O // 4)
    F = weight_format.xproj_group(dev, M, O, P, fmt)
    if F:
        # the gathered fold: the shares and counts in zeroed words that every dispatch leaves
        # zeroed (lib/matvec_xproj_gather.wgsl), the scan summing the groups' totals
        words = gather_words(dev, (M, P, F, O))
        PG = -(-P // F)
        weight_format.matvec(batch, x, weights, [u, z], M,
                             conv=(conv_w, conv_b, conv_state, 0),
                             xproj=(w_dt, w_b, w_c, words, S, F))
        return u, z, (Tensor(dev, (M, PG, 4 * Q), buffer=words.buffer, offset=words.offset), PG, Q)
    shares = Tensor(dev, (M, P, 4 * Q))
    weight_format.matvec(batch, x, weights, [u, z], M, conv=(conv_w, conv_b, conv_state, 0),
                         xproj=(w_dt, w_b, w_c, shares, S, 0))
    return u, z, (shares, P, Q)


def gather_words(dev, layout):
    """The device's zeroed words for Mamba-1's gathered x_proj shares of `layout` (M, P, F, O)
    (weight_format.xproj_words): one buffer for every layer and step of that layout, since each
    dispatch leaves its shares and counts zero and the scan step reads its totals before the
    next layer's in_proj writes them (the backend orders the two: both bind it). One a layout,
    not a size: two layouts of one size would read each other's totals as counts. Made outside
    any pool (a recorded graph's private pool would take it back), zeroed when made, kept."""
    made = dev.__dict__.setdefault("_xproj_words", {})
    if layout not in made:
        n = weight_format.xproj_words(*layout)
        buf = dev.buffer(4 * n, label="xproj_words")
        dev.write(buf, bytes(4 * n))
        made[layout] = Tensor(dev, (n,), buffer=buf)
    return made[layout]


def _input_foldable(dev, x, w, flag):
    """Whether an op on x [M, K] can fold into W's weight-streaming mat-vec input (the
    gated_norm / relu2 folds below): x a whole Tensor of K = W's columns, K a multiple of 4,
    the streaming mat-vec taking W (decode-sized x on a real GPU, no adapter, no row blocks),
    and `device.<flag>` not False."""
    K = w.shape[1]
    return (getattr(dev, flag, True) is not False and K % 4 == 0 and isinstance(x, Tensor)
            and tuple(x.shape[-1:]) == (K,) and _streamed_multi(dev, x, [w]))


def gated_norm_accumulate(batch, y, z, norm_w, eps, groups, w, residual, bias=None,
                          norm_before_gate=False):
    """Mamba-2's decode tail in ONE dispatch where it applies: residual += out_proj(
    MambaRMSNormGated(y, z)) (norm_before_gate=False), i.e. RMSNorm(y * silu(z)) * norm_w fed
    to W's weight-streaming mat-vec with the gate and the norm folded into its input
    (shaders/lib/matvec_rows.wgsl, GATED); norm_w None: residual += out_proj(y * silu(z))
    (Mamba-3 SISO without its out-projection norm). The norm over `groups` groups of the row
    (n_groups > 1), and norm_before_gate (Mamba-3's out-projection norm: RMSNorm_g(y) * norm_w
    * silu(z), a group a head), for one row: its groups' 1/rms applied while x is staged
    (NORM_GROUPS). Returns False where it does not apply -- several rows with several groups or
    the gate after the norm, groups that do not split K into whole vec4s, an out_proj bias, an
    adapter on W, a split W, or no streaming mat-vec -- and the caller runs the separate ops;
    `device.fuse_gated_norm = False` turns it off (tests)."""
    K = w.shape[1]
    grouped = norm_w is not None and (groups != 1 or norm_before_gate)
    if grouped and (rows_of(y) != 1 or K % (4 * groups) or groups > weight_format.THREADS):
        return False
    if (bias is not None or not isinstance(z, Tensor) or (norm_before_gate and norm_w is None)
            or not _input_foldable(batch.device, y, w, "fuse_gated_norm")):
        return False
    x = NormedRows(y, norm_w, eps) if norm_w is not None else y
    weight_format.matvec(batch, x, [w], [residual], rows_of(y), accumulate=True, gate=z,
                         norm_groups=groups if grouped else 0,
                         gate_after_norm=grouped and norm_before_gate)
    return True


def relu2_accumulate(batch, u, w, residual, bias=None):
    """NemotronH's MLP decode tail in ONE dispatch where it applies: residual (+)= relu(u)^2 @
    W^T (+ bias), the activation folded into down_proj's weight-streaming mat-vec (RELU2 in
    shaders/lib/matvec_rows.wgsl). Returns False where it does not (an adapter on W, a split
    W, K not a multiple of 4, no streaming mat-vec) and the caller runs relu2_forward +
    linear_accumulate; `device.fuse_mlp_act = False` turns it off (tests)."""
    if not _input_foldable(batch.device, u, w, "fuse_mlp_act"):
        return False
    weight_format.matvec(batch, u, [w], [residual], rows_of(u), bias=bias, accumulate=True,
                         relu2=True)
    return True


def _multi_ok(dev, x, weights):
    """Whether [x @ W^T for W in weights] may run as ONE mat-vec dispatch: decode-sized x on a
    real GPU, at most 3 bias-free matrices of one format, no adapter and no row blocks."""
    return not (rows_of(x) > MATVEC_MAX_M or not _matvec_ok(dev) or len(weights) > 3
                or any(adapter_of(dev, w) is not None or _split(w) for w in weights)
                or len({w.dtype for w in weights}) > 1)


def _streamed_multi(dev, x, weights):
    """_multi_ok, through the weight-streaming kernels (weight_format.matvec): narrow formats
    always, f32 when the 16-byte-chunk kernel is on (else the scalar matvec_multi_forward)."""
    return _multi_ok(dev, x, weights) and (weights[0].dtype != "f32"
                                           or _rows_kernel(dev, x.shape[-1]))


def _tiled_multi_ok(dev, x, weights):
    """Whether [x @ W^T for W in weights] may run as ONE tiled GEMM over the weights side by
    side (shaders/matmul_tiled_multi.wgsl): more rows than a mat-vec takes, the tiled GEMM on,
    2-3 matrices of one format, no adapter and no row blocks -- and, by rule, where even the
    whole product has too few tiles to fill the GPU (it is cut into K slices anyway): one GEMM
    and one reduce instead of one of each per weight. On the H200 (tools/sweep_matmul,
    mamba-1.4b at 1,024 tokens) x_proj's dt|B|C as one 160-column product took 114.5 us where
    its three products took 114.7 + 59.6 + 59.6; side by side through Dawn the prefill went
    9,225 -> 9,460 and 9,395 tok/s. Where the whole product fills the GPU the weights go one by
    one: mamba-1.4b's in_proj halves as one 8,192-column product left the prefill's GPU time
    where it was (125.7 against 126.0 ms, tools/profile_kernels) although x_proj's share fell.
    `device.tiled_multi` (tests), else MAMBAWEB_TILED_MULTI = 1 | 0 (bench variants), else
    the rule."""
    if rows_of(x) <= MATVEC_MAX_M or not _tiled_ok(dev) or not 2 <= len(weights) <= 3 \
            or any(adapter_of(dev, w) is not None or _split(w) for w in weights) \
            or len({w.dtype for w in weights}) > 1:
        return False

    def few_tiles():                      # the whole product is cut into K slices
        M, N, K = rows_of(x), sum(w.shape[0] for w in weights), x.shape[-1]
        return _split_count(dev, M, N, K, _tiles(M, N)[1]) > 1
    return step_kernels.choose(dev, "tiled_multi", "MAMBAWEB_TILED_MULTI", "1", "0", few_tiles)


def _tiled_multi(batch, x, weights, outs):
    """outs[g] = x @ weights[g]^T for every g in one tiled GEMM (narrow weights through f32
    copies, as matmul takes them)."""
    dev = batch.device
    if isinstance(x, NormedRows):
        x = x.materialize(batch)
    tmps = [weight_format.dequantize(batch, w) if w.dtype != "f32" else None for w in weights]
    ws = [t if t is not None else w for t, w in zip(tmps, weights)]
    Ns = [w.shape[0] for w in weights]
    G, K = len(weights), x.shape[-1]
    from py_engine.ops.conv1d import rw_dummy
    more_w = [ws[1].binding, ws[2].binding if G > 2 else dummy(dev)]
    more_y = [outs[1].binding, outs[2].binding if G > 2 else rw_dummy(dev)]
    _matmul_tiled(batch, x, ws[0], outs[0], rows_of(x), sum(Ns), K, (K, 1, 1, K), None, 0,
                  multi=(Ns[0], Ns[1], more_w, more_y))
    for t in tmps:
        if t is not None:
            t.release()            # reused only after this GEMM in queue order


def pieces_ok(dev, x, weights):
    """Whether [x @ W^T for W in weights] may run as ONE mat-vec dispatch over row blocks packed
    side by side in one buffer (ops/weight_pack.py, weight_format.matvec_pieces): what
    _streamed_multi asks of a multi call (decode-sized x on a real GPU, one format, no adapter,
    no row blocks) for up to weight_format.MAX_PIECES blocks that lie packed. On unless
    `device.matvec_pieces` (tests) or MAMBAWEB_MATVEC_PIECES=0 (bench variants) says otherwise:
    it takes Mamba-3's in_proj from three dispatches a decoded layer to one."""
    from py_engine.gpu.settings import choose
    from py_engine.ops.weight_pack import is_packed
    ws = list(weights)
    return (2 <= len(ws) <= weight_format.MAX_PIECES
            and choose(dev, "matvec_pieces", "MAMBAWEB_MATVEC_PIECES", "1", "0", lambda: True)
            and rows_of(x) <= MATVEC_MAX_M and _matvec_ok(dev)
            and not any(adapter_of(dev, w) is not None or _split(w) for w in ws)
            and len({(w.dtype, w.shape[1]) for w in ws}) == 1
            and (ws[0].dtype != "f32" or _rows_kernel(dev, x.shape[-1]))
            and is_packed(dev, ws))


def linear_pieces(batch, x, weights, outs):
    """outs[i] = x @ weights[i]^T for any number of bias-free matrices sharing x's last dim: one
    dispatch where pieces_ok and the outputs lie side by side in one buffer (the caller lays
    them out so), else linear_multi three at a time."""
    dev = batch.device
    if pieces_ok(dev, x, weights) and weight_format.side_by_side(outs, 4) is not None:
        weight_format.matvec_pieces(batch, x, list(weights), list(outs), rows_of(x))
        return outs
    for i in range(0, len(weights), 3):
        linear_multi(batch, x, weights[i:i + 3], outs=outs[i:i + 3])
    return outs


def linear_multi(batch, x, weights, outs=None):
    """[x @ W^T for W in weights] (2 or 3 bias-free matrices sharing x's last dim K), into
    `outs` where given (a list; None entries: new tensors).

    Decode-sized x (M <= 4) with subgroups: one dispatch for all of them; more rows on a real
    GPU: one tiled GEMM over the weights side by side (_tiled_multi); otherwise one
    linear_forward each."""
    dev = batch.device
    K = x.shape[-1]
    M = rows_of(x)
    given = list(outs) if outs is not None else [None] * len(weights)
    outs = [out_like(dev, tuple(x.shape[:-1]) + (w.shape[0],), y) for w, y in zip(weights, given)]
    for w in weights:
        if w.shape[1] != K:
            raise ValueError(f"linear_multi: weight {list(w.shape)} does not take K={K}")
    if not _multi_ok(dev, x, weights):
        if _tiled_multi_ok(dev, x, weights):
            _tiled_multi(batch, x, weights, outs)
            return outs
        for w, y in zip(weights, outs):
            linear_forward(batch, x, w, out=y)
        return outs
    if _streamed_multi(dev, x, weights):
        weight_format.matvec(batch, x, weights, outs, M)
        return outs
    if isinstance(x, NormedRows):
        x = x.materialize(batch)
    Ns = [w.shape[0] for w in weights] + [0] * (3 - len(weights))
    u = dev.uniform(params(M, K, len(weights), 0, *Ns, 0))
    from py_engine.ops.conv1d import rw_dummy
    ws = [w.binding for w in weights] + [dummy(dev)] * (3 - len(weights))
    ys = [y.binding for y in outs] + [rw_dummy(dev)] * (3 - len(weights))
    batch.run("matvec", "matvec_multi_forward",
              [u, x.binding, ws[0], None, ys[0], ws[1], ws[2], ys[1], ys[2]],
              -(-max(Ns) // MATVEC_ROWS), 1, len(weights), constants=_matvec_constants(dev))
    return outs
