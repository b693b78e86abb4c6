"""Mamba-3 scan (SISO, and MIMO of rank R): sequence forward and one-token step
(shaders/mamba3_forward.wgsl,
shaders/mamba3_step.wgsl). Float64 reference: tests/reference/mamba3_numpy.py (scan_sequential).

Shapes (Bsz may be absent: [T, W] means Bsz = 1; a step takes [Bsz, W]):
    x              [Bsz, T, H*P]  Tensor or Cols view (in_proj's x columns)
    Bn, Cn         [Bsz, T, G*N]  RMSNorm_N(B) * B_norm.weight (normed by the caller, bias NOT added)
    dd_dt, dd_A, trap [Bsz, T, H];  angles [Bsz, T, S]   raw in_proj columns (Tensors or Cols views)
    dt_bias [H], B_bias / C_bias [H, N] (the [H, 1, N] parameter flattened), D [H]
    y              [Bsz, T, H*P]  new contiguous Tensor: S q + D v per head, no z gate
    state          any object with GPU tensors angle [Bsz, H, S], ssm [Bsz, H, P, N],
                   k [Bsz, H, N] (previous token's ROTATED k, bias included), v [Bsz, H, P]

MIMO (mimo_x [H, R, P] given; R = rank): Bn, Cn are [Bsz, T, R*G*N] (rows (r g n)), B_bias / C_bias
[H, R, N], k state [Bsz, R, H, N], y [Bsz, T, R*H*P] (rank-major per row: y_r = S q_r + D v_r, the
per-rank output before its gate; ops/mamba3_mimo.py gates and contracts it with mimo_o). Per token:
    v_r = x * mimo_x[h, r];  k_r / q_r rotated in pairs (i, i + N/2), i < S (the MIMO layout)
    S = alpha S + beta sum_r v_prev_r k_prev_r^T + gamma sum_r v_r k_r^T
    (v_prev_r = v_prev * mimo_x)

Math per token t, head h (group h // (H / G)), as the reference:
    DT = softplus(dd_dt + dt_bias);  A = min(-f(dd_A), -A_floor), f = heavy tail or softplus
    lam = sigmoid(trap);  alpha = exp(A DT);  beta = (1 - lam) DT alpha;  gamma = lam DT
    theta = tanh(angles) pi;  phi = (phi + theta DT) mod 2pi   (kept reduced, in f32)
    k = rot(Bn + B_bias[h], phi);  q = rot(Cn + C_bias[h], phi)  (pairs (2i, 2i+1), i < S)
    S = alpha S + beta v_prev k_prev^T + gamma v k^T;  y = S q + D v

Dispatches: forward 1 + W (mamba3_prep: per-token scalars + packed parameters; mamba3_scan: one
workgroup per (b, h), sequential in t, states in place, once per token window); step 2 (the same
prep, mamba3_step). W = the number of token windows (ops/mamba3_windows.py: lavapipe ends a
long-running invocation's loops early, so a long sequence is walked in several dispatches whose
states carry through their buffers; W = 1 for short ones).
Two, not one, because inputs + parameters + states are 16 storage bindings and a browser gives 10;
the SISO step is one (shaders/mamba3_step_folded.wgsl) where the device binds 15 and the mixer hands
it dd_dt, dd_A, trap and angles in one buffer (step_folds_prep).
The forward has two forms of one workgroup per (b, h): the sequential scan (O(T) dependent steps)
and the chunked form mamba3_chunk_scan (reference scan_chunked / state-spaces' mamba3_siso_fwd_ref
and mamba3_MIMO_chunk_ref, with a carried state): per chunk of L tokens the intra-chunk part is an
(L R) x (L R) matrix over (token, rank) pairs (q_{t,u} . k_{s,r} times the decay products and
trapezoid weights) applied to v, the state enters through cp_t acc q_t and leaves as one rank-L R
update, so O(T / L) dependent steps and one read + write of the state per chunk instead of per
token. `path` picks one ("serial" / "chunked"); by default the chunked form runs for prompts of at
least CHUNK_MIN_T tokens. L = chunk_len(N, S, R): the largest of 32, 16, 8, 4, 2 with L R <= 32
whose k, q, M, phi tiles fit the workgroup memory (d_state 128: L R = 8, i.e. L 8 SISO, 4 at R 2,
2 at R 4; none at R 8: serial).

Memory: a transient `pre` buffer of Bsz*T*(4H + S) + 2HN + H floats (released after recording,
kept with save=True); with state=None, transient zero-read states (the final state is dropped).
save=True returns Mamba3Saved: pre (DT, alpha, beta, gamma, theta per token; packed biases, D) and
copies of the initial states (None when the scan started from zeros). With the in_proj output
(x, Bn, Cn, the raw columns) that the caller keeps, that is everything a backward needs: it can
recompute phi, k, q and every state from the initial state (or checkpoint states per chunk).
"""
from py_engine.gpu.batch import MAX_WORKGROUPS
from py_engine.gpu.settings import storage_bindings
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params, workgroup_storage
from py_engine.ops.conv1d import Cols, bt_of, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.mamba3_windows import (LOOP_PASS_BUDGET, chunk_passes_per_chunk,
                                          serial_passes_per_token, windows)
from py_engine.ops import mamba3_tiles, step_kernels
from py_engine.ops.weight_pack import one_binding  # noqa: F401  (re-exported)

HAS_INIT, HEAVY, MIMO = 1, 2, 4
MAX_RANK = 8               # the shaders' per-thread accumulator arrays
WG = 64                    # threads per workgroup (the shaders' WG)
FWD, STEP, STEP_FOLDED = "mamba3_forward", "mamba3_step", "mamba3_step_folded"
STEP_FOLDED_ONE = "mamba3_step_folded_one"   # x, B and C through the raw scalars' binding too
CHUNKED = "mamba3_chunked"   # the chunks side by side (path "parallel")
TILES = "mamba3_chunk_tiles"  # its delta and out in register tiles (ops/mamba3_tiles)
STATE_NAMES = ("angle", "ssm", "k", "v")


class Mamba3Saved:
    """What the forward keeps for a backward: pre [Bsz*T*(4H+S) + 2HRN + H (+ HRP MIMO)] (rows
    [DT | alpha | beta | gamma | theta], then B_bias | C_bias | D (| mimo_x)) and the initial states (angle, ssm, k, v;
    each None when the scan started from zeros)."""
    __slots__ = ("pre", "angle0", "ssm0", "k0", "v0")

    def __init__(self, pre, init):
        self.pre = pre
        self.angle0, self.ssm0, self.k0, self.v0 = init

    def release(self):
        for name in self.__slots__:
            t = getattr(self, name)
            if t is not None:
                t.release()
            setattr(self, name, None)


class _Spec:
    """Sizes of one call: nb, T, H, P, G, N, S (T = 1 for a step)."""

    def __init__(self, x, Bn, Cn, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D,
                 n_heads, n_groups, S, step, mimo_x=None):
        self.R = R = 1 if mimo_x is None else int(mimo_x.shape[1]) if len(mimo_x.shape) == 3 else 0
        self.mimo = mimo_x is not None
        self.H = H = int(n_heads)
        self.G = G = int(n_groups)
        self.S = S = int(S)
        if H < 1 or G < 1 or H % G:
            raise ValueError(f"heads H={H} must be a multiple of n_groups={G}")
        W = x.shape[-1]
        if W % H:
            raise ValueError(f"x width {W} is not a multiple of the {H} heads")
        self.P = W // H
        if self.mimo and (R < 1 or R > MAX_RANK or tuple(mimo_x.shape) != (H, R, self.P)):
            raise ValueError(f"mimo_x has shape {list(mimo_x.shape)}, expected [{H}, R, {self.P}] "
                             f"with 1 <= R <= {MAX_RANK}")
        if Bn.shape[-1] % (G * R):
            raise ValueError(f"Bn width {Bn.shape[-1]} is not a multiple of rank x n_groups="
                             f"{R * G}")
        self.N = N = Bn.shape[-1] // (G * R)
        if S < 1 or 2 * S > N or (self.mimo and N % 2):
            raise ValueError(f"S={S} rope angles need 1 <= 2S <= N={N} (N even for MIMO)")
        widths = (("Bn", Bn, R * G * N), ("Cn", Cn, R * G * N), ("dd_dt", dd_dt, H),
                  ("dd_A", dd_A, H),
                  ("trap", trap, H), ("angles", angles, S))
        if step:
            self.T = 1
            self.nb = 1 if len(x.shape) == 1 else x.shape[0]
            if len(x.shape) > 2:
                raise ValueError(f"x has shape {list(x.shape)}, expected [{self.nb}, {W}]")
            for name, a, w in widths:
                nb = 1 if len(a.shape) == 1 else a.shape[0]
                if a.shape[-1] != w or len(a.shape) > 2 or nb != self.nb:
                    raise ValueError(f"{name} has shape {list(a.shape)}, expected [{self.nb}, {w}]")
        else:
            self.nb, self.T = bt_of(x, W)
            if self.T < 1:
                raise ValueError("mamba3_forward needs at least one token")
            for name, a, w in widths:
                if a.shape[-1] != w or len(a.shape) not in (2, 3) or \
                        bt_of(a, w) != (self.nb, self.T):
                    raise ValueError(f"{name} has shape {list(a.shape)}, expected "
                                     f"[{self.nb}, {self.T}, {w}]")
        for name, a, n in (("dt_bias", dt_bias, H), ("D", D, H), ("B_bias", B_bias, H * R * N),
                           ("C_bias", C_bias, H * R * N)):
            if a is None or a.numel != n:
                raise ValueError(f"{name} must have {n} elements ([{H}] or [{H}, {R}, {N}]), got "
                                 f"{None if a is None else list(a.shape)}")

    def state_shapes(self):
        nb, H, P, N, S = self.nb, self.H, self.P, self.N, self.S
        k = (nb, self.R, H, N) if self.mimo else (nb, H, N)
        return dict(angle=(nb, H, S), ssm=(nb, H, P, N), k=k, v=(nb, H, P))

    def states(self, state, dev):
        """[angle, ssm, k, v] tensors of `state` (checked), or fresh ones to drop (state None)."""
        shapes = self.state_shapes()
        if state is None:
            return [Tensor(dev, shapes[n]) for n in STATE_NAMES]
        out = []
        for n in STATE_NAMES:
            t = getattr(state, n)
            if tuple(t.shape) != shapes[n]:
                raise ValueError(f"state.{n} must be {list(shapes[n])}, got {list(t.shape)}")
            out.append(t)
        return out


def _uniform_fn(dev, s, flags, A_floor, xv, bv, cv, yv, raws, pw, par, packed, total):
    """uniform(t0, tn): the Params of the token window [t0, t0 + tn) (raws: the (element offset,
    row stride) of dd_dt, dd_A, trap and angles)."""
    (do, ds), (ao, as_), (to, ts), (no, ns) = raws

    def uniform(t0=0, tn=s.T):
        return dev.uniform(params(s.T, s.H, s.P, s.N, s.G, s.S, s.nb, flags, float(A_floor), pw,
                                  par, packed, xv[1], xv[2], bv[1], bv[2], cv[1], cv[2], yv[1],
                                  yv[2], do, ds, ao, as_, to, ts, no, ns, s.R, total, t0, tn))
    return uniform


def _prep(batch, s, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, A_floor, heavy_tail,
          flags, xv, bv, cv, yv, mimo_x=None):
    """uniform(t0, tn) (the Params of the token window [t0, t0 + tn)) + the pre buffer, and the
    mamba3_prep dispatch (shared by forward and step). MIMO: mimo_x [H, R, P] is copied after the
    packed parameters (no binding left for it)."""
    dev = batch.device
    H, N, S, R = s.H, s.N, s.S, s.R
    pw = 4 * H + S
    par = s.nb * s.T * pw
    packed = par + 2 * H * R * N + H
    total = packed + (H * R * s.P if s.mimo else 0)
    pre = Tensor(dev, (total,))
    flags |= (HEAVY if heavy_tail else 0) | (MIMO if s.mimo else 0)
    dv, av, tv, anv = view(dd_dt), view(dd_A), view(trap), view(angles)
    uniform = _uniform_fn(dev, s, flags, A_floor, xv, bv, cv, yv,
                          [v[1:] for v in (dv, av, tv, anv)], pw, par, packed, total)
    un = uniform()
    gx, gy = fold(-(-packed // WG))
    batch.run(FWD, "mamba3_prep",
              [un, dv[0], av[0], tv[0], anv[0], dt_bias.binding, B_bias.binding, C_bias.binding,
               D.binding, pre.binding], gx, gy)
    if s.mimo:
        batch.copy(mimo_x.buffer, mimo_x.offset, pre.buffer, pre.offset + 4 * packed,
                   4 * H * R * s.P)
    return uniform, pre


def _ws(s):
    """Workgroup floats of the scan / step: k double buffer [2][R][N] | q [R][N] | phi [S]."""
    return 3 * s.R * s.N + s.S


CHUNK_MIN_T = 16          # shorter prompts run the sequential scan (one chunk buys nothing)
WG_FLOATS = 4096          # 16 KiB of workgroup memory, the WebGPU default limit
MAX_LR = 32               # the chunked shader's per-thread y accumulators: chunk tokens x ranks


CHUNK_LENS = (32, 16, 8, 4, 2)


def chunk_len(N, S, R=1, floats=WG_FLOATS):
    """Tokens per chunk of mamba3_chunk_scan at rank R (SISO: 1): the largest L of 32, 16, 8, 4, 2
    with L R <= MAX_LR whose k, q, M, phi tiles fit `floats` of workgroup memory (WebGPU's
    default 16 KiB unless said); 0 when none does (the serial scan runs then). MIMO's chunks
    hold L R (token, rank) rows, as the reference's 64 / R."""
    for L in CHUNK_LENS:
        if _chunk_fits(L, N, S, R, floats):
            return L
    return 0


def _chunk_fits(L, N, S, R, floats):
    return L * R <= MAX_LR and _chunk_ws(L, N, S, R) <= floats


def forward_chunk_len(dev, N, S, R=1):
    """The chunk length the forward runs at: chunk_len's (within WebGPU's default 16 KiB), or
    what `device.mamba3_chunk` (tests) or MAMBAWEB_MAMBA3_CHUNK=L (benches) sets, up to what
    the device's own workgroup memory holds (refused by name past it). An H200 offers 48 KiB
    through Dawn, enough for L 32 at d_state 128 where 16 KiB holds L 8: a workgroup per
    (b, h) walks the chunks one after another, so longer chunks may pay there -- not measured
    on a GPU yet, so not the rule."""
    floats = workgroup_storage(dev) // 4
    rule = lambda: chunk_len(N, S, R)  # noqa: E731
    L = step_kernels.pick(dev, "mamba3_chunk", "MAMBAWEB_MAMBA3_CHUNK", CHUNK_LENS, rule)
    if L and not _chunk_fits(L, N, S, R, floats):
        raise ValueError(f"MAMBAWEB_MAMBA3_CHUNK={L}: a chunk of {L} tokens at rank {R} and "
                         f"d_state {N} needs {4 * _chunk_ws(L, N, S, R)} bytes of workgroup "
                         f"memory (and L x rank <= {MAX_LR}); this device has {4 * floats}: "
                         "choose a shorter chunk")
    return L


def _chunk_ws(L, N, S, R=1):
    """Workgroup floats of the chunked scan: k, q [L, R, N] | M [L R, L R] | phi [L, S] | 7 [L] |
    k_prev [R, N]."""
    return 2 * L * R * N + (L * R) ** 2 + L * S + 7 * L + R * N


def _scan_resources(un, pre, xv, bv, cv, yv, st):
    return [un, None, None, None, None, None, None, None, None, pre.binding, xv[0], bv[0], cv[0],
            yv[0]] + [t.binding for t in st]


def mamba3_forward(batch, x, Bn, Cn, dd_dt, dd_A, trap, angles, *, dt_bias, B_bias, C_bias, D,
                   n_heads, n_groups, S, A_floor, heavy_tail=True, state=None, save=False,
                   mimo_x=None, path=None):
    """-> (y [Bsz, T, R*H*P], saved: Mamba3Saved or None). state: None (zeros, final state
    dropped) or an object with tensors angle/ssm/k/v, read as the initial state and overwritten
    with the final one. mimo_x: None (SISO) or the [H, R, P] MIMO up-projection. path: None
    (chunked for T >= CHUNK_MIN_T where a chunk fits, else serial), "serial", "chunked" or
    "parallel". 1 + W dispatches (+ a copy of mimo_x with MIMO): prep, then the scan once per
    token window (W = 1 unless T is long: ops/mamba3_windows.py; the states carry from window to
    window). "parallel": the chunked form with a head's chunks side by side (_forward_parallel:
    4 dispatches a window), what None picks for "chunked" where chunks_side_by_side."""
    dev = batch.device
    s = _Spec(x, Bn, Cn, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, n_heads,
              n_groups, S, step=False, mimo_x=mimo_x)
    st = s.states(state, dev)
    init = [None] * 4
    if save and state is not None:   # the initial states, before the scan overwrites them
        for i, t in enumerate(st):
            init[i] = Tensor(dev, t.shape)
            batch.copy(t.buffer, t.offset, init[i].buffer, init[i].offset, t.nbytes)
    y = Tensor(dev, (s.nb, s.T, s.R * s.H * s.P))
    xv, bv, cv, yv = view(x), view(Bn), view(Cn), view(y)
    uniform, pre = _prep(batch, s, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, A_floor,
                         heavy_tail, HAS_INIT if state is not None else 0, xv, bv, cv, yv, mimo_x)
    L, path, most, tiled = _chunk_plan(dev, s, path)
    if path in ("chunked", "parallel") and not L:
        raise ValueError(f"the chunked Mamba-3 scan needs a 2-token chunk of rank {s.R} to fit "
                         f"workgroup memory, and d_state {s.N} is too large for it; use "
                         "path='serial'")
    if path == "chunked":
        for t0, tn in windows(s.T, chunk_passes_per_chunk(L, s.N, s.P, s.S, s.R), unit=L):
            batch.run(FWD, "mamba3_chunk_scan",
                      _scan_resources(uniform(t0, tn), pre, xv, bv, cv, yv, st), s.H, s.nb,
                      constants={"WS": _chunk_ws(L, s.N, s.S, s.R), "CHUNK": L, "RANK": s.R})
    elif path == "parallel":
        if not (tiled or side_by_side_nq(s.P, s.N)) or not most:
            raise ValueError(f"the chunks-side-by-side Mamba-3 scan takes head dims P up to "
                             f"{SIDE_BY_SIDE_WG} and 2 N ({2 * s.N}), got P {s.P}, and a chunk's "
                             "tiles and buffers within the device's workgroup memory and binding "
                             "size; use path='chunked'")
        _forward_parallel(batch, s, L, most, uniform, pre, xv, bv, cv, yv, st, bool(tiled))
    elif path == "serial":
        for t0, tn in windows(s.T, serial_passes_per_token(s.N, s.P, s.S, s.R)):
            batch.run(FWD, "mamba3_scan",
                      _scan_resources(uniform(t0, tn), pre, xv, bv, cv, yv, st), s.H, s.nb,
                      constants={"WS": _ws(s)})
    else:
        raise ValueError(f"path must be None, 'serial', 'chunked' or 'parallel', got {path!r}")
    if state is None:
        for t in st:
            t.release()   # the pool hands them out again only to later-recorded work
    if not save:
        pre.release()
        return y, None
    return y, Mamba3Saved(pre, init)


def _chunk_plan(dev, s, path):
    """(L, path, most, tiled) of a forward: its chunk length, its path (None picks by the
    rules), the chunks a token window of path "parallel" holds (side_by_side_chunks) and whether
    that path runs the tiled kernels (ops/mamba3_tiles: their own chunk length, so a chunk the
    thread-per-row kernels' tiles cannot hold is not refused when they run)."""
    chosen = path is None
    tiled = 0
    if path in (None, "parallel") and mamba3_tiles.tiles_on(dev):
        tiled = mamba3_tiles.chunk_len(dev, s.P, s.N, s.S, s.R)
        if chosen and tiled and chunked_path(dev, s.T, s.P, s.N) == "parallel":
            path = "parallel"
    if path == "parallel" and tiled:
        L = tiled
    else:
        tiled = 0
        L = forward_chunk_len(dev, s.N, s.S, s.R)
    if path is None:
        path = "serial" if not L or s.T < CHUNK_MIN_T else chunked_path(dev, s.T, s.P, s.N)
    most = side_by_side_chunks(dev, s, L, bool(tiled)) if path == "parallel" and L else 0
    if chosen and path == "parallel" and not most:
        tiled = 0                    # not even one chunk's tiles or buffers fit this device
        L = forward_chunk_len(dev, s.N, s.S, s.R)
        path = "chunked" if L else "serial"
    return L, path, most, tiled


def chunks_side_by_side(dev):
    """Whether a chunked forward runs a head's chunks side by side (path "parallel",
    shaders/mamba3_chunked.wgsl) rather than in order in one workgroup (mamba3_chunk_scan):
    `device.mamba3_parallel` (tests), else MAMBAWEB_MAMBA3_PARALLEL = 1 | 0 (bench variants),
    else on real GPUs (not a CPU adapter: SwiftShader, lavapipe, where the in-order walk has no
    idle SMs to fill and the tests' short sequences gain nothing), from SIDE_BY_SIDE_MIN_T
    tokens. Measured on the H200 through Dawn (`mambaweb bench --dawn --only model --models
    mamba3_187m --weights f16,q4 --variant inorder:MAMBAWEB_MAMBA3_PARALLEL=0`,
    .bench/call25e.sh), prefill of 1,024 tokens: in order 2,161 tok/s f16, side by side 20,515
    (q4 2,156 / 16,529); at 16-token chunks 15,047. The first form of the kernels (a thread a
    state row, .bench/call25d.sh) reached 9,594."""
    return step_kernels.hardware(dev, "mamba3_parallel", "MAMBAWEB_MAMBA3_PARALLEL")


SIDE_BY_SIDE_WG = 256   # shaders/mamba3_chunked.wgsl's CWG
# Shorter sequences run the in-order chunk scan (few chunks to set side by side, four dispatches
# instead of one): mamba3-187m f16 through Dawn on the H200 (.bench/call25e.sh), prefill of 64 /
# 256 / 1,024 tokens in order 1,576 / 2,068 / 2,161 tok/s, side by side 1,453 / 3,976 / 20,515.
SIDE_BY_SIDE_MIN_T = 128


def side_by_side_nq(P, N):
    """The n classes a state row's dims split into in mamba3_chunked.wgsl's delta and out
    kernels (NQ: a thread per (row, class)): the most of 4, 2, 1 with P NQ threads within the
    workgroup and the out kernel's shares [P, NQ, L R] within its k and q tiles [2, L R, N];
    0 where even one class does not fit (P > 256 or P > 2 N: the in-order chunk scan runs)."""
    for nq in (4, 2, 1):
        if P * nq <= SIDE_BY_SIDE_WG and P * nq <= 2 * N:
            return nq
    return 0


def chunked_path(dev, T, P, N):
    """The chunked form mamba3_forward runs for T tokens of head dims P and d_state N:
    "parallel" (the chunks side by side) where chunks_side_by_side, from SIDE_BY_SIDE_MIN_T
    tokens and where side_by_side_nq fits the head, else "chunked" (in order)."""
    if T >= SIDE_BY_SIDE_MIN_T and side_by_side_nq(P, N) and chunks_side_by_side(dev):
        return "parallel"
    return "chunked"


def side_by_side_chunks(dev, s, L, tiled=False):
    """Chunks a token window of the side-by-side path may hold (0: it does not fit): its
    kernels' tiles (_chunk_ws + the previous token's angles) within the device's workgroup
    memory, and the window's chunk states ([Bsz, H, C, P, N] and C decays) and angles
    ([Bsz, C L, H, S]) each within one binding (Device.max_binding): mamba3-187m holds ~98 KB of
    chunk states a token, so a 128 MiB binding takes ~1,300 tokens a window."""
    if tiled:
        if not mamba3_tiles.fits(dev, L, s.P, s.N, s.S, s.R):
            return 0
    elif _chunk_ws(L, s.N, s.S, s.R) + s.S > workgroup_storage(dev) // 4:
        return 0
    per_chunk = 4 * s.nb * s.H * max(s.P * s.N + 1, L * s.S)
    return dev.max_binding // per_chunk


PHI_AG = 8                 # mamba3_phi_segments' angles a workgroup (32 segments each)


def phi_segments(dev):
    """Whether the side-by-side forward walks its angles in 32 segments a (sequence, head,
    angle) side by side (mamba3_phi_segments) rather than one thread over every token
    (mamba3_phi: 17% of mamba3-187m's 1,024-token prefill on an H100): `device.
    mamba3_phi_segments` (tests) or MAMBAWEB_MAMBA3_PHI=segments|serial (bench variants); off
    by rule until timed on a GPU."""
    return step_kernels.choose(dev, "mamba3_phi_segments", "MAMBAWEB_MAMBA3_PHI", "segments",
                               "serial", lambda: False)


PHI_PASSES_PER_TOKEN = 3   # mamba3_phi's loops: ~2.4 passes a token (an eight-token round: one
#                            pass and two loops of eight); tests set more


def _forward_parallel(batch, s, L, most, uniform, pre, xv, bv, cv, yv, st, tiled=False):
    """mamba3_forward's path "parallel" (shaders/mamba3_chunked.wgsl): per token window, the
    angles walked per (b, h, angle), each chunk's state contribution side by side, the chunk
    start states walked per state element, each chunk's outputs side by side; 4 dispatches and
    up to 3 + Bsz copies a window (the k and v states in and out). A window holds as many
    chunks as one binding takes (`most`, side_by_side_chunks) and lavapipe's loop limit allows
    (mamba3_windows: the angle walk, PHI_PASSES_PER_TOKEN passes a token, is the longest loop;
    the chunk kernels' are mamba3_chunk_scan's phases for one chunk)."""
    dev = batch.device
    ang, ssm, k, v = st
    nb, T, H, P, N, S, R = s.nb, s.T, s.H, s.P, s.N, s.S, s.R
    # windows: within lavapipe's loop limit and within one binding (side_by_side_chunks)
    per_chunk = max(PHI_PASSES_PER_TOKEN * L, -(-LOOP_PASS_BUDGET // most))
    spans = windows(T, per_chunk, unit=L)
    longest = spans[0][1]                 # the first window is the longest: buffers sized by it
    phi = Tensor(dev, (nb * longest, H * S))
    chunks = Tensor(dev, (nb * H * -(-longest // L) * (P * N + 1),))
    kn, vn = nb * R * H * N, nb * H * P
    scratch = Tensor(dev, (2 * kn + vn,))
    consts = {"WS": _chunk_ws(L, N, S, R) + S, "CHUNK": L, "RANK": R, "NQ": side_by_side_nq(P, N)}
    delta = (CHUNKED, "mamba3_chunk_delta", consts)
    out = (CHUNKED, "mamba3_chunk_out", consts)
    if tiled:   # the register-tiled delta and out (ops/mamba3_tiles); phi and carry keep no tiles
        nbs, nbo, ws, ws4_delta, ws4_out = mamba3_tiles.blocks(dev, L, P, N, S, R)
        consts = {"WS": ws, "CHUNK": L, "RANK": R, "NQ": 1}
        tile = {"WS": ws, "CHUNK": L, "RANK": R}
        delta = (TILES, "mamba3_tile_delta", dict(tile, WS4=ws4_delta, NBS=nbs))
        out = (TILES, "mamba3_tile_out", dict(tile, WS4=ws4_out, NBO=nbo))
    xbuf, xoff, xstr = xv
    pb, xb, bb, cb, yb = pre.binding, xbuf, bv[0], cv[0], yv[0]
    gx, gy = fold(-(-nb * H * P * N // 256))
    for t0, tn in spans:
        nc = -(-tn // L)
        batch.copy(k.buffer, k.offset, scratch.buffer, scratch.offset, 4 * kn)
        batch.copy(v.buffer, v.offset, scratch.buffer, scratch.offset + 4 * kn, 4 * vn)
        un = uniform(t0, tn)
        phi_res = [un, pb, None, None, None, None, phi.binding, None, None, ang.binding]
        if phi_segments(dev):
            batch.run(CHUNKED, "mamba3_phi_segments", phi_res, *fold(nb * H * -(-S // PHI_AG)),
                      constants=consts)
        else:
            batch.run(CHUNKED, "mamba3_phi", phi_res, -(-nb * H * S // 64), constants=consts)
        batch.run(delta[0], delta[1],
                  [un, pb, xb, bb, cb, None, phi.binding, chunks.binding, scratch.binding],
                  H, nb, nc, constants=delta[2])
        batch.run(CHUNKED, "mamba3_chunk_carry",
                  [un, None, None, None, None, None, None, chunks.binding, None, None,
                   ssm.binding], gx, gy, constants=consts)
        batch.run(out[0], out[1],
                  [un, pb, xb, bb, cb, yb, phi.binding, chunks.binding, scratch.binding],
                  H, nb, nc, constants=out[2])
        batch.copy(scratch.buffer, scratch.offset + 4 * (kn + vn), k.buffer, k.offset, 4 * kn)
        last = t0 + tn - 1                               # the v state: the window's last x row
        for b in range(nb):
            src = xbuf[1] + 4 * (xoff + (b * T + last) * xstr)
            batch.copy(xbuf[0], src, v.buffer, v.offset + 4 * b * H * P, 4 * H * P)
    for t in (phi, chunks, scratch):
        t.release()


def mamba3_step(batch, x, Bn, Cn, dd_dt, dd_A, trap, angles, state, *, dt_bias, B_bias, C_bias,
                D, n_heads, n_groups, S, A_floor, heavy_tail=True, out=None, mimo_x=None,
                bc_norm=None):
    """One token: x [Bsz, H*P], Bn/Cn [Bsz, R*G*N], dd_dt/dd_A/trap [Bsz, H], angles [Bsz, S]
    (Tensors or Cols views); state (angle, ssm, k, v) updated in place -> y [Bsz, R*H*P] (a new
    tensor, or `out`: a tensor or Cols view). 2 dispatches (prep, step; + a copy with MIMO), or
    1 where step_folds_prep allows it and dd_dt, dd_A, trap and angles are views of one buffer
    (the step reads them through one binding and computes its head's scalars itself).
    bc_norm (B_norm.weight, C_norm.weight, eps), where step_folds_bc_norm allows it: Bn/Cn are
    the raw in_proj columns and the step applies their RMSNorm over N itself."""
    dev = batch.device
    s = _Spec(x, Bn, Cn, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, n_heads,
              n_groups, S, step=True, mimo_x=mimo_x)
    if bc_norm is not None and not step_folds_bc_norm(
            dev, s.mimo, s.N, s.S, (dt_bias, B_bias, C_bias, D) + tuple(bc_norm[:2])):
        raise ValueError("mamba3_step: this step cannot fold B's and C's norm (MIMO, too large "
                         "a state for workgroup memory, or not the lanes step): normalise them "
                         "first (step_folds_bc_norm)")
    if bc_norm is not None and any(tuple(w.shape) != (s.N,) for w in bc_norm[:2]):
        raise ValueError(f"mamba3_step: bc_norm weights must be [{s.N}], got "
                         f"{[list(w.shape) for w in bc_norm[:2]]}")
    if state is None:
        raise ValueError("mamba3_step needs a state (angle, ssm, k, v)")
    st = s.states(state, dev)
    W = s.R * s.H * s.P
    y = out if out is not None else Tensor(dev, (s.nb, W))
    if y.shape[-1] != W:
        raise ValueError(f"out has shape {list(y.shape)}, expected [{s.nb}, {W}]")
    xv, bv, cv, yv = view(x), view(Bn), view(Cn), view(y)
    norms = [w.binding for w in bc_norm[:2]] if bc_norm is not None else [dummy(dev)] * 2
    lanes_consts = {"WS": _ws(s)}
    if bc_norm is not None:                # normalised B and C after phi in sh
        lanes_consts.update(NORM_BC=1, NORM_EPS=float(bc_norm[2]), WS=_ws(s) + 2 * s.N)
    lanes = step_runs_lanes(dev, s.mimo, s.N, s.S)
    folded = step_reads_raw(dev, s.mimo, s.N, s.S)
    prm = folded_params(dt_bias, B_bias, C_bias, D, bc_norm) if folded else None
    # x, B and C too where in_proj wrote them beside the raw scalars (the packed in_proj, B and
    # C raw for the folded norms): then through the same binding (STEP_FOLDED_ONE)
    raw = one_binding([x, Bn, Cn, dd_dt, dd_A, trap, angles]) if prm is not None else None
    shader = STEP_FOLDED_ONE
    if raw is not None:
        (xo, xs), (bo, bs), (co, cs), *raws = raw[1]
        xv, bv, cv, raw = (None, xo, xs), (None, bo, bs), (None, co, cs), (raw[0], raws)
    elif prm is not None:
        raw, shader = one_binding([dd_dt, dd_A, trap, angles]), STEP_FOLDED
    if raw is not None and any(b[0] is raw[0][0] for b in [yv[0]] + [t.binding for t in st]):
        raw = None                         # y or a state in that buffer: read and written at once
    if raw is not None:                    # the step computes its head's scalars: no prep
        flags = HAS_INIT | (HEAVY if heavy_tail else 0)
        un = _uniform_fn(dev, s, flags, A_floor, xv, bv, cv, yv, raw[1], 0, 0, 0, 0)()
        po = dev.uniform(params(*prm[1], 0, 0))
        if step_splits_for(dev, s.H, s.P):
            split = (_step_rows_last if step_last(dev, shader == STEP_FOLDED_ONE)
                     else _step_split)
            split(batch, s, shader, un, raw[0], po, prm[0], xv, bv, cv, yv, st, lanes_consts)
            return y
        res = [un, raw[0], None, None, po, prm[0], None, None, None, None, xv[0], bv[0], cv[0],
               yv[0]] + [t.binding for t in st]
        batch.run(shader, "mamba3_step_lanes_folded", res, s.H, s.nb, constants=lanes_consts)
        return y
    if bc_norm is not None and not lanes:
        raise ValueError("mamba3_step: B's and C's norms fold into the lanes step only, which "
                         "this device cannot bind here (the layer's parameters not packed, or "
                         "fewer than LANES_STORAGE storage bindings): normalise them first")
    uniform, pre = _prep(batch, s, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, A_floor,
                         heavy_tail, HAS_INIT, xv, bv, cv, yv, mimo_x)
    res = _scan_resources(uniform(), pre, xv, bv, cv, yv, st)
    consts, entry = {"WS": _ws(s)}, "mamba3_step"
    if lanes:
        consts, entry = lanes_consts, "mamba3_step_lanes"
        res += norms
    batch.run(STEP, entry, res, s.H, s.nb, constants=consts)
    pre.release()
    return y


def folded_params(dt_bias, B_bias, C_bias, D, bc_norm=None):
    """(binding, [element offsets of dt_bias, B_bias, C_bias, D, B_norm.weight, C_norm.weight])
    of the folded step's parameters when they lie in one buffer (nn/mamba3.decode_param_packs
    packs them at load; the norms' offsets 0 without bc_norm), else None."""
    ts = [dt_bias, B_bias, C_bias, D] + (list(bc_norm[:2]) if bc_norm is not None else [])
    one = one_binding(ts)
    if one is None:
        return None
    offs = [o for o, _ in one[1]]
    return one[0], offs + [0] * (6 - len(offs))


def _step_split(batch, s, shader, un, raw, po, prm, xv, bv, cv, yv, st, consts):
    """The folded SISO step in two dispatches (shaders/mamba3_step_folded.wgsl): mamba3_step_head
    (a workgroup a head: its scalars, B's and C's norms, the angles, k and q; the k and angle
    states) writes kq [Bsz, H, 3N + 4]; mamba3_step_rows (SPLIT_ROWS rows a workgroup) updates
    the ssm and v states and writes y."""
    ang, ssm, k, v = (t.binding for t in st)
    kq = Tensor(batch.device, (s.nb, s.H, 3 * s.N + 4))
    head = [un, raw, kq.binding, None, po, prm, None, None, None, None, None, bv[0], cv[0], None,
            ang, None, k, None]
    batch.run(shader, "mamba3_step_head", head, s.H, s.nb, constants=consts)
    rows = [un, raw if shader == STEP_FOLDED_ONE else None, kq.binding, None, None, None, None,
            None, None, None, xv[0], None, None, yv[0], None, ssm, None, v]
    blocks = -(-s.P // SPLIT_ROWS)
    batch.run(shader, "mamba3_step_rows", rows, s.H * blocks, s.nb,
              constants={"WS": consts["WS"]})
    kq.release()


def _step_rows_last(batch, s, shader, un, raw, po, prm, xv, bv, cv, yv, st, consts):
    """The folded SISO step over the rows' grid in one dispatch (mamba3_step_rows_last): each
    workgroup runs its head's prologue itself; the head's last workgroup to have read the old k
    and angles (counted in `arrived`) writes the new ones."""
    dev = batch.device
    res = [un, raw, None, _arrived(dev, s.nb * s.H), po, prm, None, None, None, None, xv[0],
           bv[0], cv[0], yv[0]] + [t.binding for t in st]
    batch.run(shader, "mamba3_step_rows_last", res, s.H * -(-s.P // SPLIT_ROWS), s.nb,
              constants=consts)


def _arrived(dev, n):
    """A zeroed u32 buffer of at least n counts (mamba3_step_rows_last's `arrived`), one per
    device: every dispatch leaves its counts at 0, so all layers and models share it."""
    buf, have = getattr(dev, "_mamba3_arrived", (None, 0))
    if buf is None or have < n:
        have = max(n, 64)
        buf = dev.buffer(4 * have, label="mamba3 arrived")
        dev.write(buf, bytes(4 * have))
        dev._mamba3_arrived = (buf, have)
    return buf


SPLIT_ROWS = 8           # mamba3_step_rows' rows a workgroup (the shader's RPW)
LAST_STORAGE = 11        # mamba3_step_rows_last: the folded step's 10 and `arrived`
LAST_ONE_STORAGE = 8     # the same in mamba3_step_folded_one.wgsl (x, B, C through `raw`)


def step_last(dev, one=False):
    """Whether a split step runs in one dispatch, the head's last workgroup writing its k and
    angle states (_step_rows_last: 11 storage bindings, 8 with x, B and C read through the raw
    scalars' binding -- `one`, mamba3_step_folded_one.wgsl), rather than two (_step_split: 7
    and 5): the rule where the device binds that many (8-10% less GPU a token than two
    dispatches on an H100, step_splits), unless `device.mamba3_step_last` (tests) or MAMBAWEB_MAMBA3_LAST=1|0
    (bench variants) says otherwise."""
    if storage_bindings(dev) < (LAST_ONE_STORAGE if one else LAST_STORAGE):
        return False
    return step_kernels.choose(dev, "mamba3_step_last", "MAMBAWEB_MAMBA3_LAST", "1", "0",
                               lambda: True)


def step_splits(dev):
    """Whether the folded SISO step runs over the rows' grid, a head's rows over ceil(P / 8)
    workgroups (in one dispatch where step_last, else two: _step_split), rather than one
    workgroup a head (mamba3_step_lanes_folded: 24
    workgroups at mamba3-187m, 48% of its decode's GPU time on an H100): on a real GPU, unless
    `device.mamba3_step_split` (tests) or MAMBAWEB_MAMBA3_SPLIT=1|0 (bench variants) says
    otherwise. mamba3-187m on an H100 through Dawn (tools/ab_decode, one process), GPU ms a token
    one workgroup a head / head + rows / rows alone (step_last): f16 0.743 / 0.704 / 0.645, q4
    0.679 / 0.634 / 0.569; streamed f16 1,291 / 1,324 / 1,470 tok/s."""
    return step_kernels.hardware(dev, "mamba3_step_split", "MAMBAWEB_MAMBA3_SPLIT")


def step_splits_for(dev, H, P):
    """step_splits where the rows' grid, H * ceil(P / 8) workgroups, fits one dispatch's x (the
    split forms read wid.x unfolded); past MAX_WORKGROUPS (d_inner > ~524k at P 64) the
    one-workgroup-a-head step runs instead."""
    return step_splits(dev) and H * -(-P // SPLIT_ROWS) <= MAX_WORKGROUPS


LANES_STORAGE = 11       # storage buffers mamba3_step_lanes binds (9 + the two norm weights)
PREP_STORAGE = 10        # mamba3_step_lanes_folded: raw scalars, the packed parameters, 4 views, 4 states


def step_folds_prep(dev, mimo):
    """Whether a SISO step computes its per-token scalars itself (shaders/mamba3_step_folded.wgsl,
    no mamba3_prep dispatch) when dd_dt, dd_A, trap and angles lie in one buffer: the lanes step
    on a device binding PREP_STORAGE storage buffers, unless `device.mamba3_fold_prep` (tests) or
    MAMBAWEB_MAMBA3_PREP=fold|separate says otherwise."""
    if mimo or storage_bindings(dev) < PREP_STORAGE:
        return False
    if not lanes_rule(dev):
        return False
    return step_kernels.choose(dev, "mamba3_fold_prep", "MAMBAWEB_MAMBA3_PREP", "fold",
                               "separate", lambda: True)


LANES_RED = 2048          # floats of the lanes step's lane trees (8 passes x 256 threads)


def lanes_fit(dev, N, S, extra=0):
    """Whether the lanes step's workgroup memory fits the device: k, k_prev, q, phi (3N + S
    floats), `extra` (the normalised B and C: 2N), its lane trees (LANES_RED) and the rows
    step's one-word flag (mamba3_step_rows_last's last_to_arrive). Each variable is counted
    rounded up to 16 bytes: Tint's count rounds to the type's alignment (4 here), but a backend
    may pad more, and a shape counted short fails at pipeline creation where one counted long
    only takes the slower step."""
    sh = -(-(3 * N + S + extra) // 4) * 4
    return 4 * (sh + LANES_RED) + 16 <= workgroup_storage(dev)


def step_runs_lanes(dev, mimo, N, S):
    """Whether mamba3_step runs a lanes kernel: SISO, step_lanes, and its workgroup memory fits."""
    return not mimo and step_lanes(dev) and lanes_fit(dev, N, S)


def step_reads_raw(dev, mimo, N, S):
    """Whether mamba3_step computes its head's scalars from in_proj's raw columns in one
    buffer (mamba3_step_folded.wgsl), so the mixer lays them out there: SISO, the lanes rule,
    its workgroup memory fits and step_folds_prep allows it (10 storage bindings: the layer's
    parameters read through one, packed at load; else the step runs apart from prep)."""
    return (not mimo and lanes_rule(dev) and lanes_fit(dev, N, S)
            and step_folds_prep(dev, mimo))


def step_folds_bc_norm(dev, mimo, N, S, params=None):
    """Whether mamba3_step can take raw B / C with their norm weights (bc_norm): the SISO lanes
    step, its workgroup memory (k, k_prev, q, phi, the normalised B and C: 5N + S floats, and
    its lane trees) within the device's limit, and the step's bindings: the unfolded lanes step
    binds LANES_STORAGE; below that (a Mac's 10) only the folded step can, where it reads
    `params` ((dt_bias, B_bias, C_bias, D, B_norm.weight, C_norm.weight): nn/mamba3's) through
    one binding."""
    if mimo or not lanes_fit(dev, N, S, 2 * N):
        return False
    if step_lanes(dev):
        return True
    return (params is not None and step_reads_raw(dev, mimo, N, S)
            and folded_params(*params[:4], params[4:]) is not None)


def step_lanes(dev):
    """Whether a SISO step runs mamba3_step_lanes (32 threads per state row, 256 threads per
    head, a head's 64 rows x 128 states loaded at once before the prologue; lanes_fit says
    whether its workgroup memory fits) rather than mamba3_step (a thread per row): real
    GPUs, unless `device.mamba3_step_lanes` (tests) or MAMBAWEB_MAMBA3_STEP=rows|lanes says
    otherwise (ops/step_kernels.py). MIMO keeps mamba3_step."""
    return storage_bindings(dev) >= LANES_STORAGE and lanes_rule(dev)


def lanes_rule(dev):
    """step_lanes' choice without its binding count: the folded step (mamba3_step_folded.wgsl)
    binds fewer, so step_folds_prep asks this."""
    return step_kernels.lanes(dev, "mamba3_step_lanes", "MAMBAWEB_MAMBA3_STEP")
