"""Mamba-2 SSD scan, backward (shaders/ssd_backward.wgsl); the forward is ops/ssd.py.

Shapes (Bsz may be absent: [T, .] means Bsz = 1). Activations are Tensors or `Cols` views:
    dy, x   [Bsz, T, H*P]   x: the x columns of the conv output [x | B | C]
    dt      [Bsz, T, H]     raw dt (in_proj's dt columns), *before* dt_bias
    B, C    [Bsz, T, G*N]   head h uses group h // (H/G)
    A_log, D, dt_bias [H]
    hc      [Bsz, nc, H, P, N]  state before each chunk of `chunk` tokens (hc[:, 0] = initial
                                state); None only when nc = 1 and the initial state was zero
    dh_last [Bsz, H, P, N]  gradient into the final state, or None

Math (transformers' Mamba2 torch path):
    dt = clamp(softplus(dt + dt_bias), dt_min, dt_max)  (threshold 20; clamp gradient passes
         where dt_min <= softplus <= dt_max, as torch.clamp);   A = -exp(A_log)
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t (x) B_t;   y_t = C_t . h_t + D x_t
The chunked adjoint (state-passing between chunks, short serial loops inside one) is derived
in the shader header. No per-token states are materialised: besides the saved hc the backward
keeps per chunk the adjoint R_c (overwriting a local sum GL_c: one hc-sized region) and three
lower-triangular L x L matrices per (b, head, chunk).

Dispatches: 10 (prep, mats, gloc, carry, dx, dC, dB, rows, ddt, params), independent of shapes.
Work memory (transient, floats): 3*Bsz*H*nc*L(L+1)/2 + 11*Bsz*H*T + 3*Bsz*T*H*P
+ Bsz*(nc+1)*H*P*N + Bsz*H*nc*(P+1), e.g. 81 MiB at Bsz 1, T 2048, H 24, P 64, N 128, L 64.
Deterministic: every reduction is a fixed-order loop.
"""
import math

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params
from py_engine.ops.conv1d import Cols, bt_of, rw_dummy, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.loop_budget import spans, window_len
from py_engine.ops.ssd import loop_chunk

HAS_D, HAS_BIAS, HAS_DH, WRITE_DH0, ACCUMULATE, HAS_DTMAX, HAS_INIT = 1, 2, 4, 8, 16, 32, 64
SHADER = "ssd_backward"
F_FLAGS, F_T0, F_TN, F_C_HI, F_C_LO = 8, 30, 31, 52, 53   # Params fields the windows replace
_REGIONS = ("dt", "sig", "l", "ds", "de", "tot", "dm", "dcb", "z", "gr", "ep",
            "w1", "w2", "w3", "ys", "rn", "s2", "pa", "pd", "pb")


def _work_layout(nb, T, H, P, N, L, nc):
    """Element offsets of the work regions, and the total size."""
    tok, chk, act = nb * H * T, nb * H * nc, nb * T * H * P
    tri = chk * (L * (L + 1) // 2)          # packed lower-triangular L x L per (b, h, chunk)
    sizes = {"dt": tok, "sig": tok, "l": tok, "ds": tok, "de": tok, "tot": chk,
             "dm": tri, "dcb": tri, "z": tri, "gr": nb * (nc + 1) * H * P * N, "ep": chk * P,
             "w1": act, "w2": act, "w3": act, "ys": tok, "rn": tok, "s2": tok,
             "pa": tok, "pd": tok, "pb": tok}
    off, at = {}, 0
    for k in _REGIONS:
        off[k] = at
        at += sizes[k]
    return off, at


def _bt(name, a, width):
    """(Bsz, T) of activation `name`, [T, width] or [Bsz, T, width]; the error names it."""
    try:
        return bt_of(a, width)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def ssd_backward(batch, dy, x, dt, A_log, B, C, *, n_groups, hc, chunk, D=None, dt_bias=None,
                 dt_min=0.0, dt_max=float("inf"), dh_last=None, want_dh0=False, grads=None,
                 accumulate=False):
    """-> {"dx": [Bsz,T,H*P], "ddt": [Bsz,T,H] (w.r.t. the raw dt), "dB", "dC": [Bsz,T,G*N],
    "dA_log": [H], "dD": [H] or None, "ddt_bias": [H] or None, "dh0": [Bsz,H,P,N] or None}

    grads: optional preallocated outputs (Tensors or Cols views, e.g. dx/dB/dC as column
    windows of the conv output's gradient). accumulate=True adds dA_log/dD/ddt_bias into the
    given tensors; the per-token gradients are always overwritten. 10 dispatches (a few more
    for very long inputs: the carry and the parameter sums run in windows within the loop-pass
    budget, py_engine/ops/loop_budget.py).
    """
    dev = batch.device
    H = A_log.shape[0]
    if len(A_log.shape) != 1:
        raise ValueError(f"A_log must be [H], got {list(A_log.shape)}")
    G = int(n_groups)
    if G < 1 or H % G:
        raise ValueError(f"n_groups={G} must divide the {H} heads")
    nb, T = _bt("dt", dt, H)
    if x.shape[-1] % H:
        raise ValueError(f"x width {x.shape[-1]} is not a multiple of H={H}")
    P = x.shape[-1] // H
    if B.shape[-1] % G:
        raise ValueError(f"B width {B.shape[-1]} is not a multiple of n_groups={G}")
    N = B.shape[-1] // G
    for name, a, w in (("dy", dy, H * P), ("x", x, H * P), ("B", B, G * N), ("C", C, G * N)):
        if _bt(name, a, w) != (nb, T):
            raise ValueError(f"{name} has shape {list(a.shape)}, expected [{nb}, {T}, {w}]")
    for name, a in (("D", D), ("dt_bias", dt_bias)):
        if a is not None and tuple(a.shape) != (H,):
            raise ValueError(f"{name} must be [{H}], got {list(a.shape)}")
    L = max(1, min(loop_chunk(dev, chunk, P, N, H // G), T))   # as the forward clamped it
    nc = -(-T // L)
    if hc is None:
        if nc > 1:
            raise ValueError("hc (the forward's chunk start states) is required when T > chunk")
    elif tuple(hc.shape) not in ((nb, nc, H, P, N),) + (((nc, H, P, N),) if nb == 1 else ()):
        raise ValueError(f"hc must be [{nb}, {nc}, {H}, {P}, {N}] for chunk {L}, got "
                         f"{list(hc.shape)}")
    state = (nb, H, P, N)
    if dh_last is not None and tuple(dh_last.shape) not in (state,) + \
            (((H, P, N),) if nb == 1 else ()):
        raise ValueError(f"dh_last must be {list(state)}, got {list(dh_last.shape)}")

    g = dict(grads or {})

    def out(key, shape):
        t = g.get(key)
        if t is None:
            t = Tensor(dev, shape)
        elif tuple(t.shape) != tuple(shape):
            raise ValueError(f"grads[{key!r}] has shape {list(t.shape)}, expected {list(shape)}")
        g[key] = t
        return t

    dx = out("dx", tuple(x.shape))
    ddt = out("ddt", tuple(dt.shape))
    dB = out("dB", tuple(B.shape))
    dC = out("dC", tuple(C.shape))
    dA = out("dA_log", (H,))
    dD = out("dD", (H,)) if D is not None else None
    dbias = out("ddt_bias", (H,)) if dt_bias is not None else None
    dh0 = out("dh0", state) if want_dh0 else None
    for k in ("dD", "ddt_bias", "dh0"):
        g.setdefault(k, None)
    if D is None:
        g["dD"] = None
    if dt_bias is None:
        g["ddt_bias"] = None
    if not want_dh0:
        g["dh0"] = None

    has_max = dt_max is not None and math.isfinite(dt_max)
    flags = ((HAS_D if D is not None else 0) | (HAS_BIAS if dt_bias is not None else 0) |
             (HAS_DH if dh_last is not None else 0) | (WRITE_DH0 if want_dh0 else 0) |
             (ACCUMULATE if accumulate else 0) | (HAS_DTMAX if has_max else 0) |
             (HAS_INIT if hc is not None else 0))
    v = {k: view(a) for k, a in (("dy", dy), ("x", x), ("dt", dt), ("b", B), ("c", C),
                                 ("dx", dx), ("dd", ddt), ("db", dB), ("dc", dC))}
    wk, total = _work_layout(nb, T, H, P, N, L, nc)
    fields = [T, H, P, N, G, L, nc, nb, flags, float(dt_min or 0.0),
              float(dt_max) if has_max else 0.0, 0]
    for k in ("dy", "x", "dt", "b", "c", "dx", "dd", "db", "dc"):
        fields += [v[k][1], v[k][2]]
    fields += [0, T]                                   # S9's token window: all
    fields += [wk[k] for k in _REGIONS] + [nc, 0, 0, 0]   # S3's chunk window: all
    assert len(fields) == 56   # the shader's Params struct
    un = dev.uniform(params(*fields))

    def windowed(flag_bits, at):
        """The uniform with fields replaced ({field index: value}) and flags | flag_bits."""
        f = list(fields)
        f[F_FLAGS] = flags | flag_bits
        for i, val in at.items():
            f[i] = val
        return dev.uniform(params(*f))
    work = Tensor(dev, (total,))
    W = work.binding
    ub = dummy(dev)
    hcb = hc.binding if hc is not None else ub
    R = [un] + [None] * 19

    def res(**kw):
        r = list(R)
        for k, val in kw.items():
            r[int(k[1:])] = val
        while r and r[-1] is None:
            r.pop()
        return r

    def grid(n):
        return fold(-(-n // 64))

    bias_b = dt_bias.binding if dt_bias is not None else ub
    # S0 prep: dt, dt', l, decays
    batch.run(SHADER, "ssd_backward_prep",
              res(b3=v["dt"][0], b4=bias_b, b5=A_log.binding, b11=W), *grid(nb * H * nc))
    # S1 the L x L matrices DM, DCB, Z
    batch.run(SHADER, "ssd_backward_mats",
              res(b1=v["dy"][0], b2=v["x"][0], b6=v["b"][0], b7=v["c"][0], b11=W),
              *grid(nb * H * T * L))
    # S2 per-chunk local adjoint sums
    batch.run(SHADER, "ssd_backward_gloc", res(b1=v["dy"][0], b7=v["c"][0], b11=W),
              *grid(nb * nc * H * P * N))
    # S3 serial carry over chunks: R_c, <R_c, hstart_c>, dh0
    # One thread walks every chunk (N + 2 passes each): past the loop-pass budget (lavapipe,
    # py_engine/ops/loop_budget.py) the walk is cut into windows of chunks, top down.
    carry = res(b9=hcb, b10=dh_last.binding if dh_last is not None else ub, b11=W,
                b19=dh0.binding if dh0 is not None else rw_dummy(dev, 1))
    step = window_len(N + 2, fixed=N + 8)
    for c_lo in range((nc - 1) // step * step, -1, -step):
        c_hi = min(nc, c_lo + step)
        carry[0] = un if (c_hi, c_lo) == (nc, 0) else windowed(0, {F_C_HI: c_hi, F_C_LO: c_lo})
        batch.run(SHADER, "ssd_backward_carry", list(carry), *grid(nb * H * P))
    # S4 dx (and the per-(t, h, p) products the dt gradient sums)
    batch.run(SHADER, "ssd_backward_dx",
              res(b1=v["dy"][0], b2=v["x"][0], b6=v["b"][0], b7=v["c"][0],
                  b8=D.binding if D is not None else ub, b9=hcb, b11=W, b12=v["dx"][0]),
              *grid(nb * T * H * P))
    # S5 dC, S6 dB (summed over the heads of a group; two dispatches because dB and dC are
    # usually windows of one buffer and overlapping writable bindings are invalid in one)
    batch.run(SHADER, "ssd_backward_dc",
              res(b1=v["dy"][0], b6=v["b"][0], b9=hcb, b11=W, b15=v["dc"][0]),
              *grid(nb * T * G * N))
    batch.run(SHADER, "ssd_backward_db",
              res(b2=v["x"][0], b7=v["c"][0], b11=W, b14=v["db"][0]), *grid(nb * T * G * N))
    # S7 sums over p, Z row prefixes; S8 ddt and the per-token parameter terms
    batch.run(SHADER, "ssd_backward_rows", res(b11=W), *grid(nb * H * T))
    batch.run(SHADER, "ssd_backward_ddt",
              res(b5=A_log.binding, b11=W, b13=v["dd"][0]), *grid(nb * H * T))
    # S9 dA_log, dD, ddt_bias
    # (one thread per head sums over all Bsz*T tokens: token windows past the budget, each
    # added into the first's result)
    pr = res(b5=A_log.binding, b11=W, b16=dA.binding,
             b17=dD.binding if dD is not None else rw_dummy(dev, 2),
             b18=dbias.binding if dbias is not None else rw_dummy(dev, 3))
    for t0, tn in spans(T, window_len(nb, fixed=nb + 8)):
        pr[0] = un if tn == T else windowed(ACCUMULATE if t0 else 0, {F_T0: t0, F_TN: tn})
        batch.run(SHADER, "ssd_backward_params", list(pr), -(-H // 64))
    work.release()  # the pool hands it out again only to later-recorded work
    return g
