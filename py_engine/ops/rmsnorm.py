"""RMSNorm over the last dim (shaders/rmsnorm_{forward,backward}.wgsl); forward saves 1/rms per
row."""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import ACCUMULATE, dummy, fold, out_like, params, rows_of
from py_engine.ops.loop_budget import ALIGN_ROWS, shifted, spans, window_len

HAS_WEIGHT = 1


def rmsnorm_forward(batch, x, w=None, eps=1e-5, out=None, rstd=None):
    """Returns (y, rstd); w=None is the weightless norm (Falcon-Mamba's B/C/dt norms)."""
    dev = batch.device
    rows, dim = rows_of(x), x.shape[-1]
    y = out_like(dev, x.shape, out)
    rstd = rstd if rstd is not None else Tensor(dev, (rows,))
    u = dev.uniform(params(rows, dim, float(eps), HAS_WEIGHT if w is not None else 0))
    gx, gy = fold(rows)
    batch.run("rmsnorm_forward", "rmsnorm_forward",
              [u, x.binding, w.binding if w is not None else dummy(dev), y.binding, rstd.binding],
              gx, gy)
    return y, rstd


def rmsnorm_backward(batch, dy, x, rstd, w=None, dx=None, dw=None, accumulate_dx=False,
                     accumulate_dw=False):
    """Returns (dx, dw); dw is None for the weightless norm. accumulate_*: add into dx / dw."""
    dev = batch.device
    rows, dim = rows_of(x), x.shape[-1]
    has_w = HAS_WEIGHT if w is not None else 0
    dx = out_like(dev, x.shape, dx)
    u = dev.uniform(params(rows, dim, 0.0, has_w | (ACCUMULATE if accumulate_dx else 0)))
    gx, gy = fold(rows)
    batch.run("rmsnorm_backward", "rmsnorm_backward",
              [u, x.binding, w.binding if w is not None else dummy(dev), dx.binding,
               rstd.binding, dy.binding], gx, gy)
    if w is None:
        return dx, None
    dw = out_like(dev, (dim,), dw)
    # one thread sums a column over all rows: windows of rows past the loop-pass budget
    # (lavapipe; py_engine/ops/loop_budget.py), each added into dw
    for r0, rn in spans(rows, window_len(1, fixed=8, align=ALIGN_ROWS)):
        acc = ACCUMULATE if accumulate_dw or r0 else 0
        uw = dev.uniform(params(rn, dim, 0.0, has_w | acc))
        batch.run("rmsnorm_backward", "rmsnorm_backward_weight",
                  [uw, shifted(x.binding, 4 * r0 * dim), None, dw.binding,
                   shifted(rstd.binding, 4 * r0), shifted(dy.binding, 4 * r0 * dim)],
                  -(-dim // 64))
    return dx, dw


class NormedRows:
    """RMSNorm(x) * w, not yet computed: a decode step's pre-norm handed to the layer as its
    input. The mat-vec kernels fold it into the projections that read it (one dispatch fewer
    per layer, shaders/lib/matvec_rows.wgsl); any other reader calls `materialize`, which
    runs the norm once. `release` frees what materialize made (x belongs to the caller)."""

    def __init__(self, x, w, eps):
        self.x, self.w, self.eps = x, w, float(eps)
        self.shape, self.dtype = x.shape, x.dtype
        self._y = None

    def materialize(self, batch):
        if self._y is None:
            self._y, rstd = rmsnorm_forward(batch, self.x, self.w, eps=self.eps)
            rstd.release()
        return self._y

    def release(self):
        if self._y is not None:
            self._y.release()
            self._y = None
