"""Mamba-2 SSD scan: chunked sequence forward and one-token step (shaders/ssd_forward.wgsl,
shaders/ssd_step.wgsl).

Shapes (Bsz may be absent: [T, W] means Bsz = 1):
    x       [Bsz, T, H*P]   Tensor or Cols view (a column window of the conv output [x | B | C])
    dt      [Bsz, T, H]     raw dt, before dt_bias and softplus (a Cols view of in_proj's output)
    B, C    [Bsz, T, G*N]   head h reads group h // (H / G)
    A_log, D, dt_bias [H];  head_dim P = x width // H (any P, not only powers of two)
    h0, h_out, state  [Bsz, H, P, N]   (transformers' ssm_states layout)
    y       [Bsz, T, H*P]   new contiguous Tensor: includes D*x, no gating (the gated norm is its
                            own op)

Math (transformers' mamba2_chunk_scan / mamba2_selective_state_update, the torch paths):
    dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)   (threshold 20; dt_max may be inf)
    A = -exp(A_log[h]);  h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T;  y_t = h_t C_t + D x_t
The forward is the chunked SSD: T is cut into nc = ceil(T / L) chunks of L tokens (the last may
be shorter); within a chunk the output is the masked "attention" form with the stable segment
sum, chunk end states come from a decay-weighted sum, a serial pass over chunks (parallel over
b, h, p, n) gives every chunk's start state, and the start state adds exp(cumsum) C.h to the
output. See the shader header for the kernels.

Dispatches: forward 1 when T <= L (output and final state in one kernel), else 3 (chunk states,
carry, output); step 1 (decode replays it per token: dt softplus/clamp, D skip fused, state in
place). The chunk states and outputs of T > L run in one of two forms (forward_path):
shaders/ssd_forward.wgsl's 64 threads a chunk (CPU adapters) or shaders/ssd_chunked.wgsl's 256,
the chunk's products in register tiles (path "parallel": real GPUs where its tiles fit at the
chunk asked for; chunks_spread, spread_chunk).

Memory: the forward keeps hc [Bsz, nc, H, P, N] (chunk start states; always when nc > 1, and
with save=True also when nc = 1) and a transient work buffer of Bsz*nc*H*(P*N + 1) floats when
nc > 1. save=True returns hc for the backward (`SSDSaved`, release with .release()).
Workgroup memory: ssd_forward.wgsl (2 + TL) * L floats per workgroup, TL (rows of the
intra-chunk tile) sized from the device's maxComputeWorkgroupStorageSize; a chunk length that
does not fit raises a ValueError naming the limit (16 KiB, the WebGPU default, fits L <= 1365).
ssd_chunked.wgsl: 2 L floats and spread_blocks' vec4s, its operands staged in blocks of dims
sized to the device (L 32 at P 64, N 128 fits 16 KiB); where even one dim a block does not fit,
the 64-thread kernels run at the same L (never a shorter chunk: hc and work grow as 1 / L, and
the models' memory estimates count the asked chunk).
"""
import math

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params, workgroup_storage
from py_engine.ops.conv1d import Cols, bt_of, rw_dummy, view  # noqa: F401  (Cols re-exported)
from py_engine.ops import loop_budget
from py_engine.ops import step_kernels

HAS_BIAS, HAS_D, HAS_INIT, SAVE, HAS_DT_MIN, HAS_DT_MAX = 1, 2, 4, 8, 16, 32
DEFAULT_CHUNK = 256        # transformers' Mamba2Config.chunk_size
MAX_TILE_ROWS = 16         # rows per intra-chunk tile: more only costs occupancy on a real GPU
WG = 64                    # threads per workgroup (the shaders' WG)
FWD, STEP = "ssd_forward", "ssd_step"
SPREAD = "ssd_chunked"     # path "parallel": a chunk's products in register tiles (real GPUs)
SPREAD_WG = 256            # its WG


class SSDSaved:
    """What the forward keeps for the backward: chunk length L, chunk count nc, and the state
    before each chunk, hc [Bsz, nc, H, P, N] (hc[:, 0] = h0, or zeros)."""
    __slots__ = ("chunk", "nc", "hc")

    def __init__(self, chunk, nc, hc):
        self.chunk, self.nc, self.hc = chunk, nc, hc

    def release(self):
        if self.hc is not None:
            self.hc.release()
        self.hc = None


def default_chunk(device=None):
    """Chunk length L of the forward: transformers' 256 where the workgroup memory allows it."""
    if device is None:
        return DEFAULT_CHUNK
    return min(DEFAULT_CHUNK, max_chunk(device))



def max_chunk(device):
    """Longest chunk the forward can run here: (2 + 1 tile row) * L floats of workgroup memory."""
    return workgroup_storage(device) // 4 // 3


def tile_rows(device, L):
    """Rows TL of the intra-chunk tile for chunk length L: the most that fit next to cum and dt
    in maxComputeWorkgroupStorageSize, at most MAX_TILE_ROWS and L."""
    limit = workgroup_storage(device)
    tl = (limit // 4 - 2 * L) // L
    if tl < 1:
        raise ValueError(
            f"SSD chunk length {L} needs {3 * L * 4} bytes of workgroup memory ((2 + 1) * L "
            f"floats) but this GPU's maxComputeWorkgroupStorageSize is {limit} bytes: use "
            f"chunk <= {max_chunk(device)}")
    return min(tl, MAX_TILE_ROWS, L)


def chunk_loop_passes(L, TL, P, N, hg=1):
    """Loop passes of the busiest thread of the per-chunk SSD kernels at chunk length L, tile
    rows TL, head_dim P, d_state N and hg heads per group (none counted as unrolled):
    ssd_forward (prep's serial cumsum; per tile the M fill, ceil(TL*cols/64) N-long dots, and
    the outputs, ceil(TL*P/64) of s <= l plus the N-long start term; with nc = 1 the final
    state), ssd_forward_chunk, and the backward's per-chunk kernels (dC/dB: hg (P + L))."""
    c = lambda a: -(-a // WG)   # noqa: E731  (a thread's share of a lid-strided loop)
    prep = c(L) + 1 + L + 1
    tiles = 0
    for l0 in range(0, L, TL):
        rows = min(TL, L - l0)
        tiles += c(rows * (l0 + rows)) * (N + 2) + 1 + c(rows * P) * (L + N + 4) + 1
    state = c(L) + 1 + c(P * N) * (L + 2) + 1
    fwd = prep + tiles + 1 + state
    bwd = max(2 * (L + 1) + c(L) + 1, 3 * L + P + N + 8, hg * (P + L + 4) + 1)
    return max(fwd, bwd)


def loop_chunk(device, L, P, N, hg=1):
    """The chunk length the kernels run: L, halved until one thread's loop passes fit the
    loop-pass budget (py_engine/ops/loop_budget.py: lavapipe cuts every loop of an invocation
    short after 65535 passes, silently; at L 256, P 64, N 128 the forward went wrong from token
    160). The result does not depend on the chunking, only rounding does; the models' 32
    already fits."""
    L, budget = max(1, int(L)), loop_budget.LOOP_PASS_BUDGET
    while L > 1 and chunk_loop_passes(L, tile_rows(device, L), P, N, hg) > budget:
        L = -(-L // 2)
    return L


def chunks_spread(dev):
    """Whether the chunked forward runs shaders/ssd_chunked.wgsl (path "parallel": a chunk's
    operands staged once, its products in 4 x 4 register tiles, 256 threads a chunk) rather
    than ssd_forward.wgsl's chunk kernels (64 threads a chunk, every product term read from
    memory): `device.ssd_parallel` (tests), else MAMBAWEB_SSD_PARALLEL = 1 | 0 (bench
    variants), else on real GPUs (not a CPU adapter: SwiftShader, lavapipe). Measured on
    Chromium's SwiftShader (one forward, P 64, 32-token chunks, ms): T 128 H 8 N 64 the 64-thread
    kernels 92-151, the tile form 193-203; T 256 H 4 N 128 157-173 against 205-214 -- slower
    there (lavapipe ran it ~8x faster)."""
    return step_kernels.hardware(dev, "ssd_parallel", "MAMBAWEB_SSD_PARALLEL")


def _v(a):
    return -(-a // 4)


def spread_blocks(dev, L, P, N):
    """(NBS, NBO, states vec4s, out vec4s) of ssd_chunked.wgsl at chunk length L on this device:
    the most of B's vec4s of dims (states) and of dims (out: C^T, B^T and hc^T) a block that
    fit the workgroup memory beside sh's 2 L floats and the fixed tiles (its header has the
    layout); `device.ssd_block` (tests) caps both. NBS or NBO 0: it does not fit."""
    LV, PV, NV = _v(L), _v(P), _v(N)
    avail = (workgroup_storage(dev) - 4 * 2 * L) // 16
    cap = getattr(dev, "ssd_block", None) or 1 << 30
    nbs = max(0, min(NV, cap, (avail - L * PV) // max(L, 1)))
    nbo = max(0, min(N, cap, (avail - L * PV - L * LV) // (2 * LV + PV)))
    return nbs, nbo, L * PV + L * nbs, L * PV + L * LV + nbo * (2 * LV + PV)


def _spread_fits(dev, L, P, N):
    """A block of one dim fits, and each thread owns at most one M and one y tile."""
    nbs, nbo, _, _ = spread_blocks(dev, L, P, N)
    return nbs > 0 and nbo > 0 and _v(L) * max(_v(P), _v(L)) <= SPREAD_WG


SPREAD_CHUNKS = (4, 8, 16, 32)   # what MAMBAWEB_SSD_CHUNK / device.ssd_chunk may set
SPREAD_RULE_L = 32


def spread_chunk(dev, L, P, N):
    """The chunk length path "parallel" runs for a requested L: L, at most SPREAD_RULE_L or what
    `device.ssd_chunk` / MAMBAWEB_SSD_CHUNK sets (a bench knob), where a block of one dim fits
    the device's workgroup memory beside the fixed tiles (spread_blocks) and its out kernel's
    (4 tokens, 4 rows) tiles its threads (ceil(L/4) ceil(P/4) <= 256); else 0 (the 64-thread
    kernels run). Not a shorter chunk to make it fit: the chunk states it keeps grow as 1 / L.
    mamba2-130m's heads (P 64, N 128) fit L 32 in WebGPU's default 16 KiB (blocks of 60 / 7
    dims; an H200's 48 KiB takes 128 / 71). The chunking changes only rounding. Measured on the
    H200 natively before the blocks (their tiles whole, in 48 KiB) (`python -m tools.ablate_ssd
    1024` and `256`: one forward at mamba2-130m's heads, .bench/call26d.sh), us a call at 1,024 /
    256 tokens: L 32 426 / 137, 16 452 / 134, 8 572 / 183; ssd_forward.wgsl's kernels 1,715 /
    991."""
    cap = step_kernels.pick(dev, "ssd_chunk", "MAMBAWEB_SSD_CHUNK", SPREAD_CHUNKS,
                            lambda: SPREAD_RULE_L)
    L = min(int(L), cap)
    return L if _spread_fits(dev, L, P, N) else 0


def forward_path(dev, T, L, P, N):
    """(path, chunk) of a forward of T tokens asked to chunk by L (after loop_chunk): "one"
    (T <= L: one dispatch), "parallel" (chunks_spread and spread_chunk fits) or "chunked"."""
    if T <= L:
        return "one", L
    Ls = spread_chunk(dev, L, P, N) if chunks_spread(dev) else 0
    return ("parallel", Ls) if Ls else ("chunked", L)


def dt_limit_flags(dt_min=0.0, dt_max=float("inf")):
    """(flags, lo, hi) for the clamp of dt: a bound is applied only where it can bind (softplus
    is >= 0, so dt_min <= 0 is no bound) and an infinite dt_max is a missing flag, never an inf
    in a uniform (WGSL may assume there are no infinities)."""
    flags, lo, hi = 0, 0.0, 0.0
    if dt_min is not None and float(dt_min) > 0.0:
        flags, lo = flags | HAS_DT_MIN, float(dt_min)
    if dt_max is not None and math.isfinite(float(dt_max)):
        flags, hi = flags | HAS_DT_MAX, float(dt_max)
    if dt_max is not None and math.isnan(float(dt_max)) or dt_min is not None and \
            math.isnan(float(dt_min)):
        raise ValueError(f"dt limits must be numbers, got ({dt_min}, {dt_max})")
    return flags, lo, hi


class _Spec:
    """Sizes of one call: nb, T, H, P, G, N (T = 1 for a step)."""

    def __init__(self, x, dt, A_log, B, C, n_groups, D, dt_bias, step=False):
        if len(A_log.shape) != 1:
            raise ValueError(f"A_log must be [H], got {list(A_log.shape)}")
        self.H = H = A_log.shape[0]
        self.G = G = int(n_groups)
        if G < 1 or H % G:
            raise ValueError(f"heads H={H} must be a multiple of n_groups={G}")
        W = x.shape[-1]
        if W % H:
            raise ValueError(f"x width {W} is not a multiple of the {H} heads")
        self.P = W // H
        if B.shape[-1] % G:
            raise ValueError(f"B width {B.shape[-1]} is not a multiple of n_groups={G}")
        self.N = B.shape[-1] // G
        if step:
            self.T = 1
            self.nb = 1 if len(x.shape) == 1 else x.shape[0]
            for name, a, w in (("dt", dt, H), ("B", B, G * self.N), ("C", C, G * self.N)):
                nb = 1 if len(a.shape) == 1 else a.shape[0]
                if a.shape[-1] != w or len(a.shape) > 2 or nb != self.nb:
                    raise ValueError(f"{name} has shape {list(a.shape)}, expected [{self.nb}, {w}]")
        else:
            self.nb, self.T = bt_of(x, W)
            if self.T < 1:
                raise ValueError("ssd_forward needs at least one token")
            for name, a, w in (("dt", dt, H), ("B", B, G * self.N), ("C", C, G * self.N)):
                if a.shape[-1] != w or len(a.shape) not in (2, 3) or \
                        bt_of(a, w) != (self.nb, self.T):
                    raise ValueError(f"{name} has shape {list(a.shape)}, expected "
                                     f"[{self.nb}, {self.T}, {w}]")
        for name, a in (("D", D), ("dt_bias", dt_bias)):
            if a is not None and tuple(a.shape) != (H,):
                raise ValueError(f"{name} must be [{H}], got {list(a.shape)}")

    @property
    def state_shape(self):
        return (self.nb, self.H, self.P, self.N)

    def check_state(self, t, name):
        if t is not None and tuple(t.shape) != self.state_shape:
            raise ValueError(f"{name} must be {list(self.state_shape)}, got {list(t.shape)}")


def _base_flags(D, dt_bias, dt_min, dt_max):
    fl, lo, hi = dt_limit_flags(dt_min, dt_max)
    return fl | (HAS_BIAS if dt_bias is not None else 0) | (HAS_D if D is not None else 0), lo, hi


def _same(a, b):
    return a.buffer is b.buffer and a.offset == b.offset


def ssd_forward(batch, x, dt, A_log, B, C, *, n_groups, D=None, dt_bias=None, dt_min=0.0,
                dt_max=float("inf"), chunk=DEFAULT_CHUNK, h0=None, h_out=None, save=False,
                out=None):
    """-> (y [Bsz, T, H*P], h_final [Bsz, H, P, N], saved: SSDSaved or None)

    h0: initial state (None: zeros). h_out: where the final state goes (may be h0 itself:
    updated in place); default a new tensor (h0 is copied into it first). save=True keeps the
    chunk start states hc for the backward. chunk: tokens per chunk L (T need not be a multiple).
    out: optional y tensor (contiguous, x's shape). 1 dispatch when T <= chunk, else 3.
    """
    dev = batch.device
    s = _Spec(x, dt, A_log, B, C, n_groups, D, dt_bias)
    s.check_state(h0, "h0")
    s.check_state(h_out, "h_out")
    nb, T, H, P, N = s.nb, s.T, s.H, s.P, s.N
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    tile_rows(dev, int(chunk))          # a chunk too long for workgroup memory: refused by name
    L = loop_chunk(dev, chunk, P, N, H // s.G)
    path, L = forward_path(dev, T, L, P, N)
    TL = tile_rows(dev, L)
    nc = -(-T // L)
    y = out if out is not None else Tensor(dev, tuple(x.shape))
    if tuple(y.shape) != tuple(x.shape) or isinstance(y, Cols):
        raise ValueError(f"out must be a contiguous tensor of shape {list(x.shape)}")
    state = h_out if h_out is not None else Tensor(dev, s.state_shape)
    if h0 is not None and not _same(h0, state):
        batch.copy(h0.buffer, h0.offset, state.buffer, state.offset, h0.nbytes)
    flags, lo, hi = _base_flags(D, dt_bias, dt_min, dt_max)
    flags |= (HAS_INIT if h0 is not None else 0) | (SAVE if save and nc == 1 else 0)
    hc = Tensor(dev, (nb, nc, H, P, N)) if nc > 1 or save else None
    n_s = nb * nc * H * P * N
    xv, dv, bv, cv, yv = view(x), view(dt), view(B), view(C), view(y)
    un = dev.uniform(params(T, H, P, N, s.G, L, nc, nb, flags, TL, lo, hi,
                            xv[1], xv[2], dv[1], dv[2], bv[1], bv[2], cv[1], cv[2],
                            yv[1], yv[2], 0, n_s))
    ub = dummy(dev)
    bias_b = dt_bias.binding if dt_bias is not None else ub
    D_b = D.binding if D is not None else ub
    if path == "parallel":
        shader, first, last = SPREAD, "ssd_chunk_states", "ssd_chunk_out"
        nbs, nbo, v_states, v_out = spread_blocks(dev, L, P, N)
        consts = {"WS": 2 * L, "WS4": v_states, "NBS": nbs}
        consts_last = {"WS": 2 * L, "WS4": v_out, "NBO": nbo}
    else:
        shader, first, last = FWD, "ssd_forward_chunk", "ssd_forward"
        consts = consts_last = {"WS": (2 + TL) * L}
    if nc > 1:
        work = Tensor(dev, (n_s + nb * nc * H,))
        batch.run(shader, first,
                  [un, xv[0], dv[0], bias_b, A_log.binding, bv[0], None, None, None, None, None,
                   work.binding], H, nc * nb, constants=consts)
        gx, gy = fold(-(-nb * H * P * N // WG))
        batch.run(FWD, "ssd_forward_carry",
                  [un, None, None, None, None, None, None, None, None, state.binding, hc.binding,
                   work.binding], gx, gy)
        work.release()   # the pool hands it out again only to later-recorded work
    batch.run(shader, last,
              [un, xv[0], dv[0], bias_b, A_log.binding, bv[0], cv[0], D_b, yv[0],
               state.binding if nc == 1 else None if path == "parallel" else rw_dummy(dev, 0),
               hc.binding if hc is not None else rw_dummy(dev, 1)],
              H, nc * nb, constants=consts_last)
    saved = None
    if save:
        saved = SSDSaved(L, nc, hc)
    elif hc is not None:
        hc.release()
    return y, state, saved


def ssd_step(batch, x, dt, A_log, B, C, state, *, n_groups, D=None, dt_bias=None, dt_min=0.0,
             dt_max=float("inf"), out=None):
    """One token: x [Bsz, H*P], dt [Bsz, H], B/C [Bsz, G*N] (Tensors or Cols views), state
    [Bsz, H, P, N] updated in place -> y [Bsz, H*P] (a new tensor, or `out`: a tensor or Cols
    view). The same math as the forward for T = 1; 1 dispatch."""
    dev = batch.device
    s = _Spec(x, dt, A_log, B, C, n_groups, D, dt_bias, step=True)
    s.check_state(state, "state")
    y = out if out is not None else Tensor(dev, tuple(x.shape))
    if y.shape[-1] != s.H * s.P:
        raise ValueError(f"out has shape {list(y.shape)}, expected [{s.nb}, {s.H * s.P}]")
    flags, lo, hi = _base_flags(D, dt_bias, dt_min, dt_max)
    xv, dv, bv, cv, yv = view(x), view(dt), view(B), view(C), view(y)
    un = dev.uniform(params(s.H, s.P, s.N, s.G, s.nb, flags, lo, hi,
                            xv[1], xv[2], dv[1], dv[2], bv[1], bv[2], cv[1], cv[2],
                            yv[1], yv[2], 0, 0))
    ub = dummy(dev)
    lanes = step_lanes(dev)
    batch.run(STEP, "ssd_step_lanes" if lanes else "ssd_step",
              [un, xv[0], dv[0], dt_bias.binding if dt_bias is not None else ub, A_log.binding,
               bv[0], cv[0], D.binding if D is not None else ub, yv[0], state.binding],
              -(-s.H * s.P // (LANES_ROWS if lanes else WG)), s.nb)
    return y


LANES_ROWS = 8   # state rows per workgroup of ssd_step_lanes (the shader's RPW)


def step_lanes(dev):
    """Whether the decode step runs ssd_step_lanes (32 threads per state row, coalesced) rather
    than ssd_step (a thread per row): real GPUs, unless `device.ssd_step_lanes` (tests) or
    MAMBAWEB_SSD_STEP=rows|lanes (benches) says otherwise (ops/step_kernels.py)."""
    return step_kernels.lanes(dev, "ssd_step_lanes", "MAMBAWEB_SSD_STEP")
