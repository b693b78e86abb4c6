"""Mamba-1 selective scan: sequence forward, one-token step (shaders/selective_scan_forward.wgsl),
backward (shaders/selective_scan_backward.wgsl).

Shapes (Bsz may be absent: [T, I] means Bsz = 1):
    u       [Bsz, T, I]   conv + SiLU output
    delta   [Bsz, T, I]   dt_proj output *without* its bias
    A_log   [I, N]        N <= 16
    B, C    [Bsz, T, N]   (typically Cols views of x_proj's [dt_low | B | C] output)
    D       [I]           skip (None: 0);   dt_bias [I] (None: 0)
    z       [Bsz, T, I]   gate (typically a Cols view of in_proj's [x | z]); None: no gating
    h0      [Bsz, I, N]   initial state (None: zeros)
    y       [Bsz, T, I],  final state [Bsz, I, N]

Math (state-spaces/mamba selective_scan_ref, transformers MambaMixer):
    A = -exp(A_log);  dt = softplus(delta + dt_bias)  (threshold 20)
    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t;   y_t = (C_t . h_t + D u_t) * silu(z_t)
    norm_bc_eps (Falcon-Mamba): B_t, C_t are first RMS-normalised over N (weightless, that eps);
    the backward then returns gradients w.r.t. the *raw* B, C.

Parallel in time: T is cut into nc chunks of L tokens. Each chunk runs from zero state (F1),
a serial pass over the nc chunk carries gives every chunk's start state (F2), and each chunk
is rerun from its start state to write y (F3). With nc = 1 only F3 runs. See the shader header
for the cost; `default_chunk` picks L so Bsz*I*nc threads fill the GPU.

Two kernels for F1 and F3, the same math, Params, flags and chunk layout (F2 and the backward
are shared): "classic" (shaders/selective_scan_forward.wgsl, one thread per (b, i, c) holding
its N states in an array) and "lanes" (shaders/selective_scan_lanes.wgsl, 16 threads per
(b, i, c), lane n holding state n in a register, y reduced over the lanes 16 tokens per
barrier pair). `scan_kernel` picks lanes on real GPUs (LANES_DEFAULT; see scan_kernel), always
classic on software adapters (SwiftShader, lavapipe), where barriers are costly; `device.force_scan_lanes`
(True / False) or MAMBAWEB_SCAN=lanes|classic overrides that (tests, tools/sweep_prefill.py).

Dispatches: forward 1 (nc = 1) or 3; step 1 (dt softplus, D skip, silu(z), Falcon's B/C norms
fused; state in place); backward 7 (+2 when the forward's chunk states were not saved).

Decode, per Mamba-1 layer and token (a fixed graph, recorded once and replayed): RMSNorm 1,
in_proj 1, conv1d_step with SiLU 1, x_proj 1, dt_proj 1 (no bias: dt_bias is added inside the
scan), selective_scan_step 1, out_proj 1 accumulating into the residual (matmul's ACCUMULATE
flag) = 7 dispatches (8 with a separate residual add). On real GPUs the norm is folded into in_proj, the
conv step into in_proj's store (ops/linear.in_proj_conv_step) and dt_proj into the scan step:
4 dispatches. Falcon-Mamba: + 1 for the dt_low RMSNorm
(its B/C norms are fused into the step) = 8. Per token on top: embedding, final norm, LM head,
sampling (ops/sampling.py: 1, or 2 with a repetition penalty).

Backward memory choice: the forward keeps only the chunk-boundary states hc [Bsz, nc, I, N]
(`save=True`); the backward recomputes the states inside each chunk into a transient buffer
[Bsz, T, I, N] (one layer at a time, reused through the pool), then scans the adjoint back.
Total transient work: Bsz*T*I*(N+4) + Bsz*nc*I*(N+3) floats.
"""
from py_engine.gpu.settings import storage_bindings
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params
from py_engine.ops.conv1d import Cols, bt_of, rw_dummy, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.loop_budget import LOOP_PASS_BUDGET, window_len

HAS_Z, HAS_BIAS, HAS_INIT, WRITE_FINAL, NORM_BC = 1, 2, 4, 8, 16
HAS_DH, ACCUMULATE, HAS_D, WRITE_DH0 = 32, 64, 128, 256
MAXN = 16             # state size limit; the decode step (selective_scan_step.wgsl) gives each of
                      # its 16 lanes per channel one state: raising this needs that kernel changed
FORWARD_SHADER = "selective_scan_forward"
BACKWARD_SHADER = "selective_scan_backward"
LANES_SHADER = "selective_scan_lanes"
LANES_CPW = 8          # channels per workgroup of the lanes kernels (selective_scan_lanes.wgsl)
LANES_TB = 16          # tokens per block (one barrier pair) of the lanes kernels
LANES_DEFAULT = "lanes"     # what real GPUs run unless told otherwise (see scan_kernel)


class ScanSaved:
    """What the forward keeps for the backward: chunk length, chunk count and the states before
    each chunk, hc [Bsz, nc, I, N] (None when nc = 1 and the initial state was zero)."""
    __slots__ = ("chunk", "nc", "hc")

    def __init__(self, chunk, nc, hc):
        self.chunk, self.nc, self.hc = chunk, nc, hc

    def release(self):
        if self.hc is not None:
            self.hc.release()
        self.hc = None


def max_chunk(N):
    """Longest chunk one thread may walk within the loop-pass budget (py_engine/ops/loop_budget.py:
    lavapipe cuts every loop of an invocation short after 65535 passes, silently; a single
    chunk of 3640 tokens at N 16 came out wrong there). The busiest kernel, the backward's
    B1, makes per token 2 passes of its two t loops and 7 N-loops of N + 1 (load_b / load_c
    with Falcon's norm, the update, the reverse pass), counting none of them as unrolled."""
    return window_len(7 * (N + 1) + 2, fixed=8 * (N + 1))


def lanes_loop_passes(L, N):
    """Loop passes of the busiest invocation of the lanes kernels over a chunk of L tokens
    (shaders/selective_scan_lanes.wgsl's header; none counted as unrolled): per block of 16
    tokens the block loop 1, Falcon's norms 2 (N + 1), the walk 17, the reduce N + 1, plus a
    few outside. Far below the classic kernels' (max_chunk bounds the chunk)."""
    return -(-int(L) // LANES_TB) * (3 * (N + 1) + 1 + LANES_TB + 1) + 8


def lanes_max_chunk(N):
    """Longest chunk of the lanes forward when no backward shares its chunks (inference): one
    invocation's loop passes (lanes_loop_passes) within a quarter of the loop-pass budget, in
    whole 16-token blocks -- 1,888 tokens at N 16, where the classic kernels' cap
    (max_chunk) is 269."""
    fixed = lanes_loop_passes(0, N)
    per_block = lanes_loop_passes(LANES_TB, N) - fixed
    return max(LANES_TB, (LOOP_PASS_BUDGET // 4 - fixed) // per_block * LANES_TB)


def default_chunk(device, nb, T, I, target_threads=None, N=MAXN, lanes=False):
    """Chunk length L: enough chunks that Bsz*I*nc (b, channel, chunk) walks reach
    `target_threads` (SwiftShader's 2-4 CPU cores are already full with Bsz*I >= 256, where
    chunking only adds the 2x recompute; a real GPU: gpu_scan_threads(lanes)), but never
    chunks shorter than 16 tokens nor longer than max_chunk(N) (lanes, which callers pass only
    when no backward reads the chunks: lanes_max_chunk(N))."""
    if target_threads is None:
        target_threads = 256 if device.info.get("is_fallback") else gpu_scan_threads(lanes)
    nc = max(1, -(-target_threads // max(1, nb * I)))
    L = max(16, -(-T // nc))
    return min(L, max(T, 1), lanes_max_chunk(N) if lanes else max_chunk(N))


def gpu_scan_threads(lanes=False):
    """(b, channel, chunk) walks to aim for on a real GPU: MAMBAWEB_SCAN_THREADS when set (for
    sweeps, either kernel), else GPU_SCAN_LANES_THREADS for the lanes kernel (each walk is 16
    threads there) or GPU_SCAN_THREADS for the classic one (one thread each)."""
    import os
    v = os.environ.get("MAMBAWEB_SCAN_THREADS", "").strip()
    if v:
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"MAMBAWEB_SCAN_THREADS must be a positive whole number, got {v!r}")
        return n
    return GPU_SCAN_LANES_THREADS if lanes else GPU_SCAN_THREADS


# classic: H200, mamba-1.4b prefill 1024: 2997 tok/s at 16384, 3510 at 65536 (tools/sweep_prefill.py)
GPU_SCAN_THREADS = 65536
# lanes: 4096 walks -- one chunk at mamba-1.4b (I 4096), three at mamba-130m (I 1536). Each
# chunk past the first costs its whole walk twice (F1, then F3 from the carried state), and a
# walk is a chain of 16-token blocks, so more chunks only paid where they filled an idle GPU.
# On an H200, mamba-1.4b f32 prefill of 1,024 tokens, side by side in one process
# (`--variant nc1:MAMBAWEB_SCAN_THREADS=4096`, nc2 8192; 2026-12-02): through Dawn 10,467 tok/s
# at one chunk, 10,125 at two, 10,141 at four (16,384 walks, the old target: one full wave of
# 262k threads); natively 11,823 against 11,458 at four. mamba-130m f16 through Dawn, 1,024
# tokens: 19,485 against 18,153 at the old target (with the old conv too).
GPU_SCAN_LANES_THREADS = 4096


def _red16(device):
    """Whether the lanes F3 sums a token's 16 lane terms written out (RED16 in
    shaders/selective_scan_lanes.wgsl; the loop's sum bit for bit): `device.scan_red16` (tests),
    else MAMBAWEB_SCAN_RED16 = 1 | 0 (bench variants), else on. On an H200, the scan alone at
    mamba-1.4b's shape (1,024 tokens, one chunk; `MAMBAWEB_SCAN_RED16=1|0 mambaweb bench
    --native|--dawn --only prefill_ops`, alternating runs, 2026-12-02), us: natively 148.5,
    153.0 written out against 187.7, 181.1 looped; through Dawn 170.5-221.8 (median 206.6)
    against 178.1-223.9 (median 217.0), each backend's runs drifting more than the two differ."""
    from py_engine.gpu.settings import choose
    return choose(device, "scan_red16", "MAMBAWEB_SCAN_RED16", "1", "0", lambda: True)


def scan_kernel(device):
    """'lanes' or 'classic' for the forward's F1 / F3: `device.force_scan_lanes` (True/False)
    when set, else MAMBAWEB_SCAN=lanes|classic when set, else LANES_DEFAULT on real GPUs and
    classic on software adapters (is_fallback: SwiftShader, lavapipe), where workgroup barriers
    are costly."""
    # On an H200 (native, side by side in one process: bench --variant scanlanes:MAMBAWEB_SCAN=
    # lanes) the lanes kernels took prefill at 1,024 tokens from 18.6k to 28.1k tok/s
    # (mamba-130m f16) and from 3.56k to 4.69k (mamba-1.4b f16), the decode after it unchanged
    # (1,081 / 1,032 tok/s, 383 / 381). An earlier call had seen that decode fall to ~575
    # tok/s after a lanes prefill with its GPU time unchanged; with three decode groups in
    # flight (models/generate.py) it no longer does.
    from py_engine.ops.step_kernels import choose
    lanes = choose(device, "force_scan_lanes", "MAMBAWEB_SCAN", "lanes", "classic",
                   lambda: LANES_DEFAULT == "lanes" and not device.info.get("is_fallback"))
    return "lanes" if lanes else "classic"


class _Spec:
    """Sizes and views of one scan call."""

    def __init__(self, u, delta, A_log, B, C, D, z, dt_bias, T=None):
        self.I, self.N = A_log.shape
        if self.N > MAXN:
            raise ValueError(f"selective scan supports state size N <= {MAXN}, got {self.N}")
        if T is None:
            self.nb, self.T = bt_of(u, self.I)
            for name, a, w in (("delta", delta, self.I), ("B", B, self.N), ("C", C, self.N)) + \
                    ((("z", z, self.I),) if z is not None else ()):
                if bt_of(a, w) != (self.nb, self.T):
                    raise ValueError(f"{name} has shape {list(a.shape)}, expected "
                                     f"[{self.nb}, {self.T}, {w}]")
        else:  # one token: [Bsz, I] or [I]
            self.nb, self.T = (1 if len(u.shape) == 1 else u.shape[0]), 1
        for name, a in (("D", D), ("dt_bias", dt_bias)):
            if a is not None and tuple(a.shape) != (self.I,):
                raise ValueError(f"{name} must be [{self.I}], got {list(a.shape)}")


def _fields(spec, flags, L, nc, eps, views, work=None, dt_rank=0, param_offsets=(0, 0, 0, 0)):
    """The Params struct of the shader, in order (for the step with dt_proj: dt_rank in _p0,
    and the packed parameters' offsets -- dt_bias, A_log, D, dt_w -- in _p1 .. _p4)."""
    f = [spec.T, spec.I, spec.N, flags, L, nc, spec.nb, float(eps)]
    for key in ("u", "dl", "b", "c", "z", "y", "du", "dd", "dz", "db", "dc"):
        v = views.get(key)
        f += [v[1], v[2]] if v is not None else [0, 0]
    f += [dt_rank, param_offsets[0]]
    w = work or {}
    f += [w.get(k, 0) for k in ("dt", "sig", "dy0", "dzs", "hs", "g", "sdt", "pd", "pb")]
    f += list(param_offsets[1:])
    return params(*f)


def _flags(D, z, dt_bias, eps):
    return ((HAS_Z if z is not None else 0) | (HAS_BIAS if dt_bias is not None else 0) |
            (HAS_D if D is not None else 0) | (NORM_BC if eps is not None else 0))


def _state_shape(spec, t, name):
    if t is not None and tuple(t.shape) not in ((spec.nb, spec.I, spec.N),) + \
            (((spec.I, spec.N),) if spec.nb == 1 else ()):
        raise ValueError(f"{name} must be [{spec.nb}, {spec.I}, {spec.N}], got {list(t.shape)}")


def _carry_forward(batch, spec, u, delta, A_log, B, dt_bias, flags, L, nc, eps, views, state, hc,
                   lanes=False):
    """F1 + F2: chunk start states into hc; the final state into `state` if WRITE_FINAL.
    lanes: F1 on the lanes kernel (F2 is the same either way)."""
    dev = batch.device
    consts = {"NS": spec.N}
    n_s = spec.nb * nc * spec.I * spec.N
    work = Tensor(dev, (n_s + spec.nb * nc * spec.I,))
    wk = {"hs": 0, "sdt": n_s}
    un = dev.uniform(_fields(spec, flags, L, nc, eps, views, wk))
    db_ = dt_bias.binding if dt_bias is not None else dummy(dev)
    shader, entry, gx = (LANES_SHADER, "selective_scan_forward_chunk_lanes",
                         -(-spec.I // LANES_CPW)) if lanes else \
        (FORWARD_SHADER, "selective_scan_forward_chunk", -(-spec.I // 64))
    batch.run(shader, entry,
              [un, views["u"][0], views["dl"][0], db_, A_log.binding, views["b"][0], None, None,
               None, None, None, None, work.binding], gx, nc * spec.nb, constants=consts)
    gx, gy = fold(-(-spec.nb * spec.I * spec.N // 64))
    batch.run(FORWARD_SHADER, "selective_scan_forward_carry",
              [un, None, None, None, A_log.binding, None, None, None, None, None,
               state.binding if state is not None else rw_dummy(dev), hc.binding, work.binding],
              gx, gy, constants=consts)
    work.release()


def selective_scan_forward(batch, u, delta, A_log, B, C, D=None, z=None, dt_bias=None, h0=None,
                           h_out=None, out=None, chunk=None, save=False, norm_bc_eps=None):
    """-> (y [Bsz, T, I], h_last [Bsz, I, N], saved: ScanSaved or None)

    h_out: where the final state goes (may be h0 itself: updated in place); default a new
    tensor (h0 is copied into it first). save=True keeps the chunk states for the backward
    (release them with saved.release()). chunk: tokens per chunk (default `default_chunk`).
    F1 and F3 run on the kernel `scan_kernel(device)` names (lanes or classic).
    """
    dev = batch.device
    spec = _Spec(u, delta, A_log, B, C, D, z, dt_bias)
    _state_shape(spec, h0, "h0")
    _state_shape(spec, h_out, "h_out")
    nb, T, I, N = spec.nb, spec.T, spec.I, spec.N
    lanes = scan_kernel(dev) == "lanes"
    # training (save) keeps the classic chunk target: the backward's kernels walk one thread
    # per (b, i, c) over the saved chunks, and want that many
    L = min(int(chunk), max_chunk(N)) if chunk else \
        default_chunk(dev, nb, T, I, N=N, lanes=lanes and not save)
    L = max(1, min(L, T))
    nc = -(-T // L)
    y = out if out is not None else Tensor(dev, tuple(u.shape))
    state = h_out if h_out is not None else Tensor(dev, (nb, I, N))
    saved_hc = None
    if save and nc == 1 and h0 is not None:
        saved_hc = Tensor(dev, (nb, 1, I, N))
        batch.copy(h0.buffer, h0.offset, saved_hc.buffer, saved_hc.offset, h0.nbytes)
    if h0 is not None and (h0.buffer is not state.buffer or h0.offset != state.offset):
        batch.copy(h0.buffer, h0.offset, state.buffer, state.offset, h0.nbytes)
    flags = _flags(D, z, dt_bias, norm_bc_eps) | (HAS_INIT if h0 is not None else 0)
    eps = norm_bc_eps or 0.0
    views = {"u": view(u), "dl": view(delta), "b": view(B), "c": view(C), "y": view(y)}
    views["z"] = view(z) if z is not None else (dummy(dev), 0, 0)
    consts = {"NS": N}
    if nc > 1:
        hc = Tensor(dev, (nb, nc, I, N))
        _carry_forward(batch, spec, u, delta, A_log, B, dt_bias, flags | WRITE_FINAL, L, nc, eps,
                       views, state, hc, lanes=lanes)
        start, f3_flags = hc, flags
    else:
        hc = saved_hc
        start, f3_flags = state, flags | WRITE_FINAL
    un = dev.uniform(_fields(spec, f3_flags, L, nc, eps, views))
    shader, entry, gx = (LANES_SHADER, "selective_scan_forward_lanes", -(-I // LANES_CPW)) \
        if lanes else (FORWARD_SHADER, "selective_scan_forward", -(-I // 64))
    batch.run(shader, entry,
              [un, views["u"][0], views["dl"][0],
               dt_bias.binding if dt_bias is not None else dummy(dev), A_log.binding,
               views["b"][0], views["c"][0], D.binding if D is not None else dummy(dev),
               views["z"][0], views["y"][0], start.binding],
              gx, nc * nb, constants=dict(consts, RED16=int(_red16(dev))) if lanes else consts)
    saved = None
    if save:
        saved = ScanSaved(L, nc, hc)
    elif nc > 1:
        hc.release()
    return y, state, saved


STEP_STORAGE = 9    # selective_scan_step_dtproj: u, dt_low, the packed parameters, B, C, z, y, state, shares


def step_takes_dt_proj(device, dt_bias=None, A_log=None, D=None, dt_w=None):
    """Whether the fused step (dt_w given) fits this device: it binds STEP_STORAGE storage
    buffers (the x_proj shares' binding among them, a dummy when x_proj runs apart), within
    the 10 of a Mac's Chrome and SwiftShader, the layer's parameters read through one binding
    -- so, where they are given, only when they lie in one buffer (step_params)."""
    if storage_bindings(device) < STEP_STORAGE:
        return False
    return dt_w is None or step_params(dt_bias, A_log, D, dt_w) is not None


def step_params(dt_bias, A_log, D, dt_w):
    """(binding, [element offsets of dt_bias, A_log, D, dt_w]) of the fused step's parameters
    when they lie in one buffer, each at an aligned offset (nn/mamba1.decode_param_packs packs
    them at load), else None. dt_bias and D may be None (offset 0, unread)."""
    from py_engine.ops.weight_pack import one_binding
    ts = [t for t in (dt_bias, A_log, D, dt_w) if t is not None]
    if any(not isinstance(t, Tensor) or t.dtype != "f32" for t in ts):
        return None
    one = one_binding(ts)
    if one is None or one[0][1] % ts[0].device.align:
        return None
    offs = iter(o for o, _ in one[1])
    return one[0], [next(offs) if t is not None else 0 for t in (dt_bias, A_log, D, dt_w)]


def step_loads_early(device):
    """Whether the fused step loads the channel's dt-independent inputs (u, A, its state, B, C,
    D, z) before the dt_proj reduction (EARLY in shaders/selective_scan_step.wgsl; the same
    result bit for bit): `device.scan_step_early` (tests), else MAMBAWEB_SCAN_STEP_EARLY=1|0
    (bench variants), else off: timed side by side in one native H200 process (`--variant
    early:MAMBAWEB_SCAN_STEP_EARLY=1`) it saved nothing (GPU ms per token 1.869 -> 1.879 at
    mamba-1.4b f16, 1.944 -> 1.946 q4, 0.614 -> 0.623 mamba-130m f16)."""
    from py_engine.ops.step_kernels import choose
    return choose(device, "scan_step_early", "MAMBAWEB_SCAN_STEP_EARLY", "1", "0", lambda: False)


def step_trip8(device):
    """Whether the fused step loads its dt_proj terms eight per lane at a time (DT_TRIP8 in
    shaders/lib/selective_scan_step_body.wgsl: one memory wait for dt_rank up to 128, where
    four at a time and the rest one by one waited three times at the 130m shape's dt_rank 48);
    the same sums in the same order. Timed with the mat-vec's TAIL (weight_format.tail_trip has
    the numbers). `device.scan_step_trip8` (tests), else MAMBAWEB_SCAN_STEP_TRIP8 = 1 | 0 (bench
    variants), else on."""
    from py_engine.ops.step_kernels import choose
    return choose(device, "scan_step_trip8", "MAMBAWEB_SCAN_STEP_TRIP8", "1", "0", lambda: True)


def step_subgroups(device):
    """Whether the fused step runs as shaders/selective_scan_step_sg.wgsl: its lane reductions'
    steps below the subgroup size as subgroup shuffles (the same bits, three barriers fewer per
    reduction). `device.scan_step_sg` (tests), else MAMBAWEB_SCAN_STEP_SG = 1 | 0 (bench
    variants), else on GPUs with hardware subgroups (step_kernels.subgroup_gpu: not on
    SwiftShader or lavapipe, which emulate the shuffles slower than the barriers they save)."""
    from py_engine.ops.step_kernels import choose, subgroup_gpu
    return choose(device, "scan_step_sg", "MAMBAWEB_SCAN_STEP_SG", "1", "0",
                  lambda: subgroup_gpu(device))


def selective_scan_step(batch, u_t, delta_t, A_log, B_t, C_t, state, D=None, z_t=None,
                        dt_bias=None, out=None, norm_bc_eps=None, dt_w=None, xpart=None):
    """One token: u_t, delta_t, z_t [Bsz, I] (or [I]), B_t, C_t [Bsz, N], state [Bsz, I, N]
    updated in place -> y_t [Bsz, I]. The same math as the forward for T = 1; 1 dispatch.

    dt_w [I, R] (f32): delta_t is then x_proj's low-rank dt [Bsz, R] and the kernel applies
    dt_proj itself (shaders/selective_scan_step.wgsl), saving a dispatch per layer.
    xpart (shares [Bsz, P, 4Q], P, Q = ceil((R + 2N) / 4)), with dt_w: x_proj's outputs come
    as the previous dispatch's P shares per sequence (ops.linear.in_proj_conv_xproj_step),
    which the kernel sums; delta_t, B_t and C_t are then None."""
    dev = batch.device
    if xpart is not None:
        shares, P, Q = xpart
        nb = 1 if len(u_t.shape) == 1 else u_t.shape[0]
        R, N = (dt_w.shape[1] if dt_w is not None else 0), A_log.shape[1]
        if dt_w is None or tuple(shares.shape) != (nb, P, 4 * Q) or -(-(R + 2 * N) // 4) != Q:
            raise ValueError(f"xpart needs dt_w and shares [{nb}, {P}, {R + 2 * N}], got "
                             f"{list(shares.shape)}")
        # the shares stand in for dt_low, B and C (the kernel reads none of these views: XPROJ)
        delta_t = Cols(shares, 0, R, (nb, R))
        B_t = Cols(shares, R, N, (nb, N))
        C_t = Cols(shares, R + N, N, (nb, N))
    if dt_w is not None:
        I, R = dt_w.shape
        if dt_w.dtype != "f32" or delta_t.shape[-1] != R:
            raise ValueError(f"dt_w must be f32 [I, {delta_t.shape[-1]}], got {dt_w.dtype} "
                             f"{list(dt_w.shape)}")
    spec = _Spec(u_t, delta_t, A_log, B_t, C_t, D, z_t, dt_bias, T=1)
    _state_shape(spec, state, "state")
    y = out if out is not None else Tensor(dev, tuple(u_t.shape))
    flags = _flags(D, z_t, dt_bias, norm_bc_eps) | HAS_INIT | WRITE_FINAL
    views = {"u": view(u_t), "dl": view(delta_t), "b": view(B_t), "c": view(C_t), "y": view(y)}
    views["z"] = view(z_t) if z_t is not None else (dummy(dev), 0, 0)
    if dt_w is not None:
        packed = step_params(dt_bias, A_log, D, dt_w)
        if packed is None:
            raise ValueError("selective_scan_step: with dt_w, dt_bias, A_log, D and dt_w must "
                             "lie in one buffer (nn/mamba1.decode_param_packs, packed at load; "
                             "step_takes_dt_proj says whether they do)")
        un = dev.uniform(_fields(spec, flags, 1, 1, norm_bc_eps or 0.0, views,
                                 dt_rank=dt_w.shape[1], param_offsets=packed[1]))
        resources = [un, views["u"][0], views["dl"][0], packed[0], None, views["b"][0],
                     views["c"][0], None, views["z"][0], views["y"][0], state.binding]
        shader = "selective_scan_step_sg" if step_subgroups(dev) else "selective_scan_step"
        consts = {"NS": spec.N, "EARLY": int(step_loads_early(dev)),
                  "DT_TRIP8": int(step_trip8(dev))}
        extra = [None, None, None, dummy(dev)]
        if xpart is not None:
            consts.update(XPROJ=1, XP_P=xpart[1], XP_Q=xpart[2])
            extra[3] = xpart[0].binding
        batch.run(shader, "selective_scan_step_dtproj", resources + extra, -(-spec.I // 8),
                  spec.nb, constants=consts)
        return y
    un = dev.uniform(_fields(spec, flags, 1, 1, norm_bc_eps or 0.0, views))
    resources = [un, views["u"][0], views["dl"][0],
                 dt_bias.binding if dt_bias is not None else dummy(dev), A_log.binding,
                 views["b"][0], views["c"][0], D.binding if D is not None else dummy(dev),
                 views["z"][0], views["y"][0], state.binding]
    batch.run(FORWARD_SHADER, "selective_scan_step", resources,
              -(-spec.I // 64), spec.nb, constants={"NS": spec.N})
    return y


def selective_scan_backward(batch, dy, u, delta, A_log, B, C, D=None, z=None, dt_bias=None,
                            h0=None, saved=None, dh_last=None, want_dh0=False, grads=None,
                            accumulate=False, norm_bc_eps=None, chunk=None):
    """Reverse mode of the forward. dy [Bsz, T, I]; dh_last [Bsz, I, N] (gradient into the final
    state) or None. saved: the forward's ScanSaved (else the chunk states are recomputed from
    h0: 2 more dispatches).

    -> dict du, ddelta (w.r.t. delta *before* dt_bias), dA_log [I, N], dB, dC [Bsz, T, N] (w.r.t.
    the raw B/C when norm_bc_eps), dD [I] (None without D), dz (None without z), ddt_bias [I]
    (None without dt_bias), dh0 [Bsz, I, N] (want_dh0) or None.
    grads: optional dict of output tensors/views with those keys (e.g. dz as a Cols view of
    in_proj's gradient). accumulate: dA_log, dD, ddt_bias are added into the given tensors.
    """
    dev = batch.device
    spec = _Spec(u, delta, A_log, B, C, D, z, dt_bias)
    if bt_of(dy, spec.I) != (spec.nb, spec.T):
        raise ValueError(f"dy shape {list(dy.shape)} does not match u {list(u.shape)}")
    nb, T, I, N = spec.nb, spec.T, spec.I, spec.N
    g = dict(grads or {})

    def out(key, shape):
        t = g.get(key)
        if t is None:
            t = Tensor(dev, shape)
        elif tuple(t.shape) != tuple(shape):
            raise ValueError(f"grads[{key!r}] has shape {list(t.shape)}, expected {list(shape)}")
        g[key] = t
        return t

    du = out("du", tuple(u.shape))
    ddelta = out("ddelta", tuple(delta.shape))
    dB = out("dB", tuple(B.shape))
    dC = out("dC", tuple(C.shape))
    dA = out("dA_log", (I, N))
    dD = out("dD", (I,)) if D is not None else None
    dbias = out("ddt_bias", (I,)) if dt_bias is not None else None
    dz = out("dz", tuple(z.shape)) if z is not None else None
    dh0 = out("dh0", (nb, I, N)) if want_dh0 else None
    g.setdefault("dD", None)
    g.setdefault("ddt_bias", None)
    g.setdefault("dz", None)
    g.setdefault("dh0", None)

    flags = _flags(D, z, dt_bias, norm_bc_eps) | (ACCUMULATE if accumulate else 0) | \
        (HAS_DH if dh_last is not None else 0) | (WRITE_DH0 if want_dh0 else 0)
    eps = norm_bc_eps or 0.0
    views = {"u": view(u), "dl": view(delta), "b": view(B), "c": view(C), "y": view(dy),
             "du": view(du), "dd": view(ddelta), "db": view(dB), "dc": view(dC)}
    views["z"] = view(z) if z is not None else (dummy(dev), 0, 0)
    if dz is not None:
        views["dz"] = view(dz)
    consts = {"NS": N}

    # Chunk start states.
    own_hc = None
    if saved is not None:
        L, nc, hc = saved.chunk, saved.nc, saved.hc
        if nc == 1 and hc is None and h0 is not None:
            raise ValueError("saved has no initial state but h0 was given: pass the ScanSaved "
                             "of the forward that used h0")
    else:
        L = min(int(chunk), max_chunk(N)) if chunk else default_chunk(dev, nb, T, I, N=N)
        L = max(1, min(L, T))
        nc = -(-T // L)
        if nc > 1:
            own_hc = hc = Tensor(dev, (nb, nc, I, N))
            _carry_forward(batch, spec, u, delta, A_log, B, dt_bias,
                           _flags(D, z, dt_bias, norm_bc_eps) | (HAS_INIT if h0 is not None else 0),
                           L, nc, eps, views, h0, hc, lanes=scan_kernel(dev) == "lanes")
        else:
            hc = h0
    if nc == 1 and hc is not None:
        flags |= HAS_INIT
    hcb = hc.binding if hc is not None else rw_dummy(dev, 1)

    # Work regions (elements).
    tI = nb * T * I
    cI = nb * nc * I
    wk = {"dt": 0, "sig": tI, "dy0": 2 * tI, "dzs": 3 * tI, "hs": 4 * tI}
    wk["g"] = wk["hs"] + tI * N
    wk["sdt"] = wk["g"] + cI * N
    wk["pd"] = wk["sdt"] + cI
    wk["pb"] = wk["pd"] + cI
    work = Tensor(dev, (wk["pb"] + cI,))
    un = dev.uniform(_fields(spec, flags, L, nc, eps, views, wk))
    ub = dummy(dev)
    bias_b = dt_bias.binding if dt_bias is not None else ub
    D_b = D.binding if D is not None else ub
    gI = -(-I // 64)
    gy, gz = fold(nb * T)
    R = [un] + [None] * 23

    def res(**kw):
        r = list(R)
        for k, v in kw.items():
            r[int(k[1:])] = v
        while r and r[-1] is None:
            r.pop()
        return r

    W = work.binding
    # B0 prep
    batch.run(BACKWARD_SHADER, "selective_scan_backward_prep",
              res(b2=views["dl"][0], b3=bias_b, b8=views["z"][0], b12=W, b13=views["y"][0]),
              gI, gy, gz, constants=consts)
    # B1 recompute states, dz, local adjoint
    batch.run(BACKWARD_SHADER, "selective_scan_backward_chunk",
              res(b1=views["u"][0], b4=A_log.binding, b5=views["b"][0], b6=views["c"][0],
                  b7=D_b, b11=hcb, b12=W, b16=views["dz"][0] if dz is not None else rw_dummy(dev, 2)),
              gI, nc * nb, constants=consts)
    # B2 dC
    rx, ry = fold(-(-nb * T // 64))
    batch.run(BACKWARD_SHADER, "selective_scan_backward_dc",
              res(b6=views["c"][0], b12=W, b18=views["dc"][0]), rx, ry, constants=consts)
    # B3 carries
    cx, cy = fold(-(-nb * I * N // 64))
    batch.run(BACKWARD_SHADER, "selective_scan_backward_carry",
              res(b4=A_log.binding, b12=W, b22=dh0.binding if dh0 is not None else rw_dummy(dev, 3),
                  b23=dh_last.binding if dh_last is not None else ub),
              cx, cy, constants=consts)
    # B4 reverse scan
    batch.run(BACKWARD_SHADER, "selective_scan_backward",
              res(b1=views["u"][0], b4=A_log.binding, b5=views["b"][0], b6=views["c"][0], b7=D_b,
                  b11=hcb, b12=W, b14=views["du"][0], b15=views["dd"][0]),
              gI, nc * nb, constants=consts)
    # B5 dB
    batch.run(BACKWARD_SHADER, "selective_scan_backward_db",
              res(b5=views["b"][0], b12=W, b17=views["db"][0]), rx, ry, constants=consts)
    # B6 parameter gradients
    batch.run(BACKWARD_SHADER, "selective_scan_backward_params",
              res(b4=A_log.binding, b12=W, b19=dA.binding,
                  b20=dD.binding if dD is not None else rw_dummy(dev, 4),
                  b21=dbias.binding if dbias is not None else rw_dummy(dev, 5)),
              gI, constants=consts)
    work.release()
    if own_hc is not None:
        own_hc.release()
    return g
