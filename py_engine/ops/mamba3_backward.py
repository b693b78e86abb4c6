"""Mamba-3 scan (SISO, and MIMO of rank R), backward (shaders/mamba3_backward.wgsl); the forward
is ops/mamba3.py.

    mamba3_backward(batch, dy, x, Bn, Cn, dd_dt, dd_A, trap, angles, saved, *, dt_bias, B_bias,
                    C_bias, D, n_heads, n_groups, S, A_floor, heavy_tail=True, grads=None,
                    mimo_x=None, ckpt=None) -> dict
dy [Bsz, T, R*H*P] is the gradient of the scan output y_r = S q_r + D v_r (before any gate; R = 1
for SISO); every other argument exactly as given to mamba3_forward(save=True), `saved` its
Mamba3Saved (pre + initial states). Returns {"dx" [Bsz,T,H*P], "dBn", "dCn" [Bsz,T,R*G*N],
"ddd_dt", "ddd_A", "dtrap" [Bsz,T,H], "dangles" [Bsz,T,S], "ddt_bias" [H], "dB_bias", "dC_bias"
([H, N] SISO, [H, R, N] MIMO), "dD" [H]} and, with mimo_x [H, R, P], "dmimo_x" [H, R, P].
`grads`: optional dict of preallocated outputs (Tensors; the per-token ones may be Cols views),
the rest are allocated. `ckpt`: the checkpoint interval C (None: ckpt_len, ceil(sqrt(T)) capped
by max_ckpt); any C gives the same gradients, it only trades memory.
The gradient into the final states is taken as zero (training starts and ends a sequence there);
none is returned for the initial states.

Math: the reverse-time adjoint in the shader header. The rotation angle of token t is cumulative
(phi_t = phi_{t-1} + theta_t DT_t), so dangles / ddd_dt take a running sum over later tokens;
A = min(-f(dd_A), -A_floor) passes no gradient where the floor binds; the trapezoid couples t to
t - 1 (beta_t multiplies v_{t-1} k_{t-1}^T), giving dx and dk a carry from token t+1.

Dispatches: 7 + W + Wp (prep, the scan once per token window -- W = 1 unless the sequence is long,
see _scan_windows and ops/mamba3_windows.py --, 6 x tok: one per token gradient, since Cols views
of one gradient buffer may not be bound writable twice in a dispatch; par once per row window --
Wp = 1 unless Bsz*T is over ~8k rows, see par_windows). The scan is one workgroup per
(b, h), sequential over t: phase A re-runs the forward keeping a checkpoint state every C tokens,
phase B walks back and, entering each chunk (at its last token), recomputes the chunk's C states
from its checkpoint (one more forward pass over the states in all): O(T) dependent steps.
Work memory (transient floats): Bsz*H*((ceil(T/C) + C)*P*N + P*N + T*(2RN + S) + S + RN + P + 1
+ RP) + Bsz*H*(P + RN + S) + Bsz*T*H*(2RN + S + 4): O(T/C + C) states per (b, h), not T + 1
(P 64, N 128: 32 KiB a state; at T 1024, C 32: 64 states, 2 MiB per (b, h), was 32 MiB).
Deterministic: every reduction is a fixed-order loop, no atomics.
"""
import math

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params
from py_engine.ops.conv1d import rw_dummy
from py_engine.ops.conv1d import Cols, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.loop_budget import spans, window_len
from py_engine.ops.mamba3 import HAS_INIT, HEAVY, MIMO, WG, _Spec
from py_engine.ops.mamba3_windows import (LOOP_PASS_BUDGET, bwd_forward_passes_per_token,
                                          bwd_recompute_passes_per_token,
                                          bwd_reverse_passes_per_token, split_by_cost, windows)

SHADER = "mamba3_backward"
TOKEN_GRADS = ("dx", "dBn", "dCn", "ddd_dt", "ddd_A", "dtrap", "dangles")
PARAM_GRADS = ("ddt_bias", "dB_bias", "dC_bias", "dD")
_REGIONS = ("ck", "phi0", "k0", "v0", "kq", "ph", "ds", "dkq", "dth", "dDp", "sc")
WINDOW_FIXED = 64         # loop passes of a scan dispatch's set-up and final writes
PAR_PASSES_PER_ROW = 4    # mamba3_bwd_par, busiest SIMD group: see par_windows


def _work_layout(nb, T, H, P, N, S, R=1, mimo=False, C=None):
    """Element offsets of the work regions (see the shader header), and the total size. C: the
    checkpoint interval (default: ckpt_len)."""
    C = C or ckpt_len(T, N, P, S, R)
    bh, rh, RN = nb * H, nb * T * H, R * N
    sizes = dict(ck=bh * (-(-T // C)) * P * N, phi0=bh * S, k0=bh * RN, v0=bh * P,
                 kq=bh * T * 2 * RN, ph=bh * T * S, ds=bh * P * N, dkq=rh * 2 * RN, dth=rh * S,
                 dDp=bh, sc=rh * 4, dmx=bh * R * P if mimo else 0, cy=bh * (P + RN + S),
                 loc=bh * C * P * N)
    off, at = {}, 0
    for k in _REGIONS + ("dmx", "cy", "loc"):
        off[k] = at
        at += sizes[k]
    return off, at


def max_ckpt(N, P, S, R=1):
    """The longest checkpoint interval whose recompute burst (at a chunk's last token, with that
    token's own reverse step) fits one lavapipe dispatch (ops/mamba3_windows.py); at least 1."""
    room = LOOP_PASS_BUDGET - WINDOW_FIXED - bwd_reverse_passes_per_token(N, P, S, R)
    return max(1, room // bwd_recompute_passes_per_token(N, P, R))


def ckpt_len(T, N, P, S, R=1):
    """Default checkpoint interval C: ceil(sqrt(T)) -- the work keeps ceil(T/C) checkpoints + C
    recomputed states per (sequence, head), about 2 sqrt(T) states instead of T + 1 -- capped by
    max_ckpt."""
    return max(1, min(math.isqrt(max(T - 1, 0)) + 1, max_ckpt(N, P, S, R), T))


def _scan_windows(T, N, P, S, R, C=None):
    """[((a0, a1), (b0, b1))] per mamba3_bwd_scan dispatch: phase A's tokens [a0, a1) and phase B's
    [b0, b1) (walked in reverse). One dispatch for both phases when their loop passes fit the
    budget (ops/mamba3_windows.py), else the forward windows in order, then the reverse ones from
    the end of the sequence (phase B's cost of a chunk's last token includes the chunk's
    recompute)."""
    C = C or ckpt_len(T, N, P, S, R)
    fa = bwd_forward_passes_per_token(N, P, S, R)
    fb = bwd_reverse_passes_per_token(N, P, S, R)
    fr = bwd_recompute_passes_per_token(N, P, R)
    rb = [fb + ((t % C + 1) * fr + 1 if t % C == C - 1 or t == T - 1 else 0)
          for t in reversed(range(T))]             # phase B's tokens T-1 .. 0
    if T * fa + sum(rb) + WINDOW_FIXED <= LOOP_PASS_BUDGET:
        return [((0, T), (0, T))]
    fwd = [((t0, t0 + tn), (0, 0)) for t0, tn in windows(T, fa, fixed=WINDOW_FIXED)]
    rev = [((0, 0), (T - i1, T - i0)) for i0, i1 in split_by_cost(rb, WINDOW_FIXED)]
    return fwd + rev


def par_windows(rows):
    """[(r0, n)] row windows of the mamba3_bwd_par dispatches ([(0, rows)] when one fits). Each of
    its four sums walks at most one pass per row (ddt_bias, dB/dC_bias: every row; dD, dmimo_x:
    one per sequence), and one 8-lane SIMD group may hold lanes of all four branches, whose loops
    then run one after the other: PAR_PASSES_PER_ROW per row for the busiest group."""
    return spans(rows, window_len(PAR_PASSES_PER_ROW))


def _grad(dev, grads, name, shape):
    g = (grads or {}).get(name)
    if g is None:
        return Tensor(dev, shape)
    gshape = tuple(g.shape)
    if gshape != tuple(shape) and not (len(shape) == 3 and shape[0] == 1 and gshape == shape[1:]):
        raise ValueError(f"grads[{name!r}] has shape {list(gshape)}, expected {list(shape)}")
    return g


def mamba3_backward(batch, dy, x, Bn, Cn, dd_dt, dd_A, trap, angles, saved, *, dt_bias, B_bias,
                    C_bias, D, n_heads, n_groups, S, A_floor, heavy_tail=True, grads=None,
                    mimo_x=None, ckpt=None):
    """-> dict of gradients (see the module docstring). 7 + W + Wp dispatches (W token windows,
    Wp par row windows).
    ckpt: the checkpoint interval C (None: ckpt_len; 1 .. max_ckpt)."""
    dev = batch.device
    s = _Spec(x, Bn, Cn, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, n_heads,
              n_groups, S, step=False, mimo_x=mimo_x)
    nb, T, H, P, G, N, S, R = s.nb, s.T, s.H, s.P, s.G, s.N, s.S, s.R
    W = R * H * P
    if tuple(dy.shape[-1:]) != (W,) or (len(dy.shape) == 3 and dy.shape[:2] != (nb, T)) or \
            (len(dy.shape) == 2 and (nb, dy.shape[0]) != (1, T)):
        raise ValueError(f"dy has shape {list(dy.shape)}, expected [{nb}, {T}, {W}]")
    if saved is None or saved.pre is None:
        raise ValueError("mamba3_backward needs the Mamba3Saved of mamba3_forward(save=True)")
    pw = 4 * H + S
    if saved.pre.numel != nb * T * pw + 2 * H * R * N + H + (H * R * P if s.mimo else 0):
        raise ValueError("saved.pre does not match these shapes (was the forward given the same "
                         "mimo_x?)")
    init = saved.ssm0 is not None
    widths = dict(dx=H * P, dBn=R * G * N, dCn=R * G * N, ddd_dt=H, ddd_A=H, dtrap=H, dangles=S)
    out = {k: _grad(dev, grads, k, (nb, T, w)) for k, w in widths.items()}
    bias = (H, R, N) if s.mimo else (H, N)
    out.update(ddt_bias=_grad(dev, grads, "ddt_bias", (H,)),
               dB_bias=_grad(dev, grads, "dB_bias", bias),
               dC_bias=_grad(dev, grads, "dC_bias", bias), dD=_grad(dev, grads, "dD", (H,)))
    if s.mimo:
        out["dmimo_x"] = _grad(dev, grads, "dmimo_x", (H, R, P))
    C = ckpt_len(T, N, P, S, R) if ckpt is None else int(ckpt)
    if not 1 <= C <= max_ckpt(N, P, S, R):
        raise ValueError(f"ckpt (the checkpoint interval) is {ckpt}, expected 1 .. "
                         f"{max_ckpt(N, P, S, R)} for d_state {N}, head_dim {P}; or None for "
                         "the default")
    C = min(C, T)
    off, size = _work_layout(nb, T, H, P, N, S, R, s.mimo, C)
    work = Tensor(dev, (size,))
    prep_total = nb * T * H + nb * H * (P * N + S + R * N + P)
    npar = 2 * H + 2 * H * R * N + (H * R * P if s.mimo else 0)
    v = {k: view(a) for k, a in dict(x=x, Bn=Bn, Cn=Cn, dy=dy, dd_dt=dd_dt, dd_A=dd_A, trap=trap,
                                     angles=angles).items()}
    v.update({k: view(out[k]) for k in TOKEN_GRADS})
    flags = (HAS_INIT if init else 0) | (HEAVY if heavy_tail else 0) | (MIMO if s.mimo else 0)
    def uniform(ntok=0, which=0, out_view=(0, 0), a=(0, 0), b=(0, 0)):
        return dev.uniform(params(
            T, H, P, N, G, S, nb, flags, float(A_floor), pw, prep_total, ntok,
            *[off[k] for k in _REGIONS], npar,
            *[f for k in ("x", "Bn", "Cn", "dy", "dd_dt", "dd_A", "trap", "angles", "dx")
              for f in v[k][1:]], *out_view, which, R, off["dmx"], off["cy"], *a, *b, C,
            off["loc"]))

    un = uniform()
    W = work.binding
    ub = dummy(dev)

    def res(u=None, **kw):
        r = [None] * 28
        r[0], r[1] = u or un, W
        for k, b in kw.items():
            r[int(k[1:])] = b
        return r

    st = [getattr(saved, n) for n in ("angle0", "ssm0", "k0", "v0")]
    if init and any(t is None for t in st):
        raise ValueError("saved has some initial states but not all")
    sb = [t.binding if t is not None else ub for t in st]
    gx, gy = fold(-(-prep_total // WG))
    batch.run(SHADER, "mamba3_bwd_prep",
              res(b2=v["dd_dt"][0], b3=dt_bias.binding, b4=v["dd_A"][0], b5=v["trap"][0],
                  b6=sb[0], b7=sb[1], b8=sb[2], b9=sb[3]), gx, gy)
    for a, b in _scan_windows(T, N, P, S, R, C):
        batch.run(SHADER, "mamba3_bwd_scan",
                  res(uniform(a=a, b=b), b10=saved.pre.binding, b11=v["x"][0], b12=v["dy"][0],
                      b13=v["Bn"][0], b14=v["Cn"][0], b15=v["dx"][0]), H, nb,
                  constants={"WS": 3 * R * N + 4 * S + 5 * P})
    for which, k in enumerate(("dBn", "dCn", "dangles", "ddd_dt", "ddd_A", "dtrap")):
        n = nb * T * widths[k]
        gx, gy = fold(-(-n // WG))
        batch.run(SHADER, "mamba3_bwd_tok",
                  res(uniform(n, which, v[k][1:]), b19=v["angles"][0], b20=v[k][0]), gx, gy)
    gx, gy = fold(-(-npar // WG))
    # one thread sums a parameter over all Bsz*T rows: row windows past the loop-pass budget
    # (lavapipe; ops/loop_budget.py), the first writing, later ones adding
    for r0, rn in par_windows(nb * T):
        batch.run(SHADER, "mamba3_bwd_par",
                  res(uniform(a=(r0, r0 + rn)),
                      b23=out["dmimo_x"].binding if s.mimo else rw_dummy(dev),
                      b24=out["ddt_bias"].binding, b25=out["dB_bias"].binding,
                      b26=out["dC_bias"].binding, b27=out["dD"].binding), gx, gy)
    work.release()   # the pool hands it out again only to later-recorded work
    return out
