"""Mamba-3 MIMO output: each rank's silu gate (or the fused head-wise RMSNorm + gate), then the
down-projection mimo_o back to one value per channel (shaders/mamba3_mimo_out.wgsl). The rank-R
scan itself is ops/mamba3.py (mimo_x given). Float64 reference: tests/reference/mamba3_numpy.py
(_finish_mimo).

    mamba3_mimo_out(batch, y, z, mimo_z, mimo_o, norm_w=None, eps=1e-5, out=None) -> out
y       [rows, R*H*P]  the scan's per-rank outputs (rank-major per row)
z       [rows, H*P]    Tensor or Cols view (in_proj's z columns)
mimo_z, mimo_o [H, R, P];  norm_w [H*P] or None (is_outproj_norm: RMSNorm over P of each y_r)
out     [rows, H*P]    new Tensor (or the given Tensor / Cols view):
        sum_r mimo_o[h, r] * (y_r [* rsqrt(mean_P y_r^2 + eps) * norm_w[h]])
              * silu(z * mimo_z[h, r])
1 dispatch.

    mamba3_mimo_out_backward(batch, dout, y, z, mimo_z, mimo_o, norm_w=None, eps=1e-5)
        -> dict(dy [rows, R*H*P], dz [rows, H*P], dmimo_z, dmimo_o [H, R, P], dnorm_w [H*P] or None)
dout [rows, H*P] (Tensor or Cols view), the rest exactly as given to the forward; every result a
new Tensor. 1 + Wp dispatches + 2-3 copies (shaders/mamba3_mimo_out_backward.wgsl: dy and dz per
(row, head), then one thread per parameter element summing over rows in order, in Wp row windows --
1 unless rows is long, see par_windows; deterministic).
Transient: the packed parameters [2HRP + HP] and rs [rows, H, R].
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy, fold, params, rows_of
from py_engine.ops.conv1d import rw_dummy, view
from py_engine.ops.loop_budget import spans, window_len

SHADER = "mamba3_mimo_out"
BWD = "mamba3_mimo_out_backward"
WG = 64
ONORM = 1


def par_windows(rows, R):
    """[(r0, n)] row windows of the mamba3_mimo_out_bwd_par dispatches ([(0, rows)] when one
    fits). Per row, a dmimo_z/o thread makes 1 loop pass and a dnorm_w thread R + 2 (the row loop
    and its R loop); one 8-lane SIMD group may hold both kinds of lanes, whose loops then run one
    after the other: R + 3 for the busiest group (lavapipe's cap; ops/loop_budget.py)."""
    return spans(rows, window_len(R + 3))


def _dims(y, z, mimo_z, mimo_o, norm_w):
    H, R, P = (int(d) for d in mimo_o.shape)
    if tuple(mimo_z.shape) != (H, R, P):
        raise ValueError(f"mimo_z has shape {list(mimo_z.shape)}, expected {[H, R, P]} (as mimo_o)")
    HP = H * P
    if y.shape[-1] != R * HP or y.numel % (R * HP):
        raise ValueError(f"y has shape {list(y.shape)}, expected [rows, {R * HP}] (R*H*P)")
    if z.shape[-1] != HP:
        raise ValueError(f"z has last dim {z.shape[-1]}, expected H*P = {HP}")
    if norm_w is not None and norm_w.numel != HP:
        raise ValueError(f"norm_w has {norm_w.numel} elements, expected H*P = {HP}")
    return H, R, P, y.numel // (R * HP)


def mamba3_mimo_out(batch, y, z, mimo_z, mimo_o, norm_w=None, eps=1e-5, out=None):
    dev = batch.device
    H, R, P, rows = _dims(y, z, mimo_z, mimo_o, norm_w)
    HP = H * P
    o = out if out is not None else Tensor(dev, (rows, HP))
    zv, ov = view(z), view(o)
    un = dev.uniform(params(rows, H, P, R, ONORM if norm_w is not None else 0, float(eps),
                            zv[1], zv[2], ov[1], ov[2]))
    gx, gy = fold(-(-rows * H // WG))
    batch.run(SHADER, SHADER,
              [un, y.binding, zv[0], mimo_z.binding, mimo_o.binding,
               norm_w.binding if norm_w is not None else dummy(dev), ov[0]], gx, gy)
    return o


def mamba3_mimo_out_backward(batch, dout, y, z, mimo_z, mimo_o, norm_w=None, eps=1e-5):
    dev = batch.device
    H, R, P, rows = _dims(y, z, mimo_z, mimo_o, norm_w)
    HP, HRP = H * P, H * R * P
    if dout.shape[-1] != HP or rows_of(dout) != rows:
        raise ValueError(f"dout has shape {list(dout.shape)}, expected [{rows}, {HP}]")
    onorm = norm_w is not None
    # mimo_z | mimo_o | norm_w in one buffer: the par pass would otherwise need 11 storage bindings
    par = Tensor(dev, (2 * HRP + (HP if onorm else 0),))
    for i, t in enumerate((mimo_z, mimo_o) + ((norm_w,) if onorm else ())):
        batch.copy(t.buffer, t.offset, par.buffer, par.offset + 4 * i * HRP, t.nbytes)
    rs = Tensor(dev, (rows, H, R))
    dy = Tensor(dev, (rows, R * HP))
    dz = Tensor(dev, (rows, HP))
    out = dict(dy=dy, dz=dz, dmimo_z=Tensor(dev, (H, R, P)), dmimo_o=Tensor(dev, (H, R, P)),
               dnorm_w=Tensor(dev, (HP,)) if onorm else None)
    zv, gv, dzv = view(z), view(dout), view(dz)

    def uniform(r0, r1):   # r0, r1: the par dispatch's row window
        return dev.uniform(params(rows, H, P, R, ONORM if onorm else 0, float(eps), zv[1], zv[2],
                                  gv[1], gv[2], dzv[1], dzv[2], r0, r1, 0, 0))

    common = [y.binding, zv[0], par.binding, gv[0], rs.binding]
    gx, gy = fold(-(-rows * H // WG))
    batch.run(BWD, "mamba3_mimo_out_bwd_rows", [uniform(0, rows)] + common + [dy.binding, dzv[0]],
              gx, gy)
    gx, gy = fold(-(-(2 * HRP + (HP if onorm else 0)) // WG))
    # one thread sums a parameter over all rows: row windows past the loop-pass budget, each
    # dispatch after the first adding to the last
    for r0, rn in par_windows(rows, R):
        batch.run(BWD, "mamba3_mimo_out_bwd_par",
                  [uniform(r0, r0 + rn)] + common +
                  [None, None, out["dmimo_z"].binding, out["dmimo_o"].binding,
                   out["dnorm_w"].binding if onorm else rw_dummy(dev)], gx, gy)
    par.release()   # the pool hands them out again only to later-recorded work
    rs.release()
    return out
