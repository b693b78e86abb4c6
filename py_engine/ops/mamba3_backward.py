"""Mamba-3 (SISO) scan, backward (shaders/mamba3_backward.wgsl); the forward is ops/mamba3.py.

    mamba3_backward(batch, dy, x, Bn, Cn, dd_dt, dd_A, trap, angles, saved, *, dt_bias, B_bias,
                    C_bias, D, n_heads, n_groups, S, A_floor, heavy_tail=True, grads=None) -> dict
dy [Bsz, T, H*P] is the gradient of the scan output y = S q + D v (before any gate); every other
argument exactly as given to mamba3_forward(save=True), `saved` its Mamba3Saved (pre + initial
states). Returns {"dx" [Bsz,T,H*P], "dBn", "dCn" [Bsz,T,G*N], "ddd_dt", "ddd_A", "dtrap" [Bsz,T,H],
"dangles" [Bsz,T,S], "ddt_bias" [H], "dB_bias", "dC_bias" [H, N], "dD" [H]}. `grads`: optional dict
of preallocated outputs (Tensors; the per-token ones may be Cols views), the rest are allocated.
The gradient into the final states is taken as zero (training starts and ends a sequence there);
none is returned for the initial states.

Math: the reverse-time adjoint in the shader header. The rotation angle of token t is cumulative
(phi_t = phi_{t-1} + theta_t DT_t), so dangles / ddd_dt take a running sum over later tokens;
A = min(-f(dd_A), -A_floor) passes no gradient where the floor binds; the trapezoid couples t to
t - 1 (beta_t multiplies v_{t-1} k_{t-1}^T), giving dx and dk a carry from token t+1.

Dispatches: 9 (prep, scan, 6 x tok: one per token gradient, since Cols views of one gradient
buffer may not be bound writable twice in a dispatch; par), independent of shapes. The scan is one workgroup per
(b, h), sequential over t twice (recompute forward, then reverse): O(T) dependent steps.
Work memory (transient floats): Bsz*H*((T+1)*P*N + P*N + T*(2N + S) + S + N + P + 1)
+ Bsz*T*H*(2N + S + 4): every state S_t is kept (e.g. 8 MiB per (b, h) at T 256, P 64, N 128);
long sequences want chunk checkpoints instead (not implemented).
Deterministic: every reduction is a fixed-order loop, no atomics.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params
from py_engine.ops.conv1d import Cols, view  # noqa: F401  (Cols re-exported)
from py_engine.ops.mamba3 import HAS_INIT, HEAVY, WG, _Spec

SHADER = "mamba3_backward"
TOKEN_GRADS = ("dx", "dBn", "dCn", "ddd_dt", "ddd_A", "dtrap", "dangles")
PARAM_GRADS = ("ddt_bias", "dB_bias", "dC_bias", "dD")
_REGIONS = ("st", "phi0", "k0", "v0", "kq", "ph", "ds", "dkq", "dth", "dDp", "sc")


def _work_layout(nb, T, H, P, N, S):
    """Element offsets of the work regions (see the shader header), and the total size."""
    bh, rh = nb * H, nb * T * H
    sizes = dict(st=bh * (T + 1) * P * N, phi0=bh * S, k0=bh * N, v0=bh * P, kq=bh * T * 2 * N,
                 ph=bh * T * S, ds=bh * P * N, dkq=rh * 2 * N, dth=rh * S, dDp=bh, sc=rh * 4)
    off, at = {}, 0
    for k in _REGIONS:
        off[k] = at
        at += sizes[k]
    return off, at


def _grad(dev, grads, name, shape):
    g = (grads or {}).get(name)
    if g is None:
        return Tensor(dev, shape)
    gshape = tuple(g.shape)
    if gshape != tuple(shape) and not (len(shape) == 3 and shape[0] == 1 and gshape == shape[1:]):
        raise ValueError(f"grads[{name!r}] has shape {list(gshape)}, expected {list(shape)}")
    return g


def mamba3_backward(batch, dy, x, Bn, Cn, dd_dt, dd_A, trap, angles, saved, *, dt_bias, B_bias,
                    C_bias, D, n_heads, n_groups, S, A_floor, heavy_tail=True, grads=None):
    """-> dict of gradients (see the module docstring). 9 dispatches."""
    dev = batch.device
    s = _Spec(x, Bn, Cn, dd_dt, dd_A, trap, angles, dt_bias, B_bias, C_bias, D, n_heads,
              n_groups, S, step=False)
    nb, T, H, P, G, N, S = s.nb, s.T, s.H, s.P, s.G, s.N, s.S
    if tuple(dy.shape[-1:]) != (H * P,) or (len(dy.shape) == 3 and dy.shape[:2] != (nb, T)) or \
            (len(dy.shape) == 2 and (nb, dy.shape[0]) != (1, T)):
        raise ValueError(f"dy has shape {list(dy.shape)}, expected [{nb}, {T}, {H * P}]")
    if saved is None or saved.pre is None:
        raise ValueError("mamba3_backward needs the Mamba3Saved of mamba3_forward(save=True)")
    pw = 4 * H + S
    if saved.pre.numel != nb * T * pw + 2 * H * N + H:
        raise ValueError("saved.pre does not match these shapes")
    init = saved.ssm0 is not None
    widths = dict(dx=H * P, dBn=G * N, dCn=G * N, ddd_dt=H, ddd_A=H, dtrap=H, dangles=S)
    out = {k: _grad(dev, grads, k, (nb, T, w)) for k, w in widths.items()}
    out.update(ddt_bias=_grad(dev, grads, "ddt_bias", (H,)),
               dB_bias=_grad(dev, grads, "dB_bias", (H, N)),
               dC_bias=_grad(dev, grads, "dC_bias", (H, N)), dD=_grad(dev, grads, "dD", (H,)))
    off, size = _work_layout(nb, T, H, P, N, S)
    work = Tensor(dev, (size,))
    prep_total = nb * T * H + nb * H * (P * N + S + N + P)
    npar = 2 * H + 2 * H * N
    v = {k: view(a) for k, a in dict(x=x, Bn=Bn, Cn=Cn, dy=dy, dd_dt=dd_dt, dd_A=dd_A, trap=trap,
                                     angles=angles).items()}
    v.update({k: view(out[k]) for k in TOKEN_GRADS})
    flags = (HAS_INIT if init else 0) | (HEAVY if heavy_tail else 0)
    def uniform(ntok=0, which=0, out_view=(0, 0)):
        return dev.uniform(params(
            T, H, P, N, G, S, nb, flags, float(A_floor), pw, prep_total, ntok,
            *[off[k] for k in _REGIONS], npar,
            *[f for k in ("x", "Bn", "Cn", "dy", "dd_dt", "dd_A", "trap", "angles", "dx")
              for f in v[k][1:]], *out_view, which))

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
    batch.run(SHADER, "mamba3_bwd_scan",
              res(b10=saved.pre.binding, b11=v["x"][0], b12=v["dy"][0], b13=v["Bn"][0],
                  b14=v["Cn"][0], b15=v["dx"][0]), H, nb,
              constants={"WS": 3 * N + 4 * S + 5 * P})
    for which, k in enumerate(("dBn", "dCn", "dangles", "ddd_dt", "ddd_A", "dtrap")):
        n = nb * T * widths[k]
        gx, gy = fold(-(-n // WG))
        batch.run(SHADER, "mamba3_bwd_tok",
                  res(uniform(n, which, v[k][1:]), b19=v["angles"][0], b20=v[k][0]), gx, gy)
    gx, gy = fold(-(-npar // WG))
    batch.run(SHADER, "mamba3_bwd_par",
              res(b24=out["ddt_bias"].binding, b25=out["dB_bias"].binding,
                  b26=out["dC_bias"].binding, b27=out["dD"].binding), gx, gy)
    work.release()   # the pool hands it out again only to later-recorded work
    return out
