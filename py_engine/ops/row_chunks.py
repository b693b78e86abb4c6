"""Linear products with a weight held as row blocks (py_engine/gpu/row_chunks.py): the LM head
of a vocabulary whose table is larger than one GPU binding.

  linear(batch, x, w, y, M)               y[M, V] (+)= x[M, K] @ W^T: each block [r0, r1) writes
                                          logits columns [r0, r1)
  backward_input(batch, dy, w, dx, M)     dx[M, K] (+)= dy[M, V] @ W: each block adds its share
  backward_weight(batch, dy, x, r0, r1, dw, M)
                                          dW[r0:r1] (+)= dy[:, r0:r1]^T @ x[M, K]

Each block runs the kernel a whole weight would (the decode mat-vec of its format, with the
threads-per-row of the whole table so every logit is summed in the same order; the prefill and
training GEMM, on a temporary f32 copy of the block for a narrow format), so the logits equal a
whole table's bit for bit (GEMMs: where the kernel's choice does not depend on the number of
rows, as on the software adapters the tests run; a real GPU's tiled GEMM may split K
differently, a float32 rounding difference). The input gradient adds the blocks' shares: the
same terms, summed in another order. Logit columns are bound in place when the offset is legal (M == 1,
block starts a multiple of 64 columns: 256 bytes, as the loader makes them); otherwise a block
writes a [M, rows] temporary that shaders/sequence_forward.wgsl's column copy puts in place.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops import linear as L
from py_engine.ops import weight_format
from py_engine.ops.rmsnorm import NormedRows
from py_engine.ops.sequence import copy_columns


def _aligned(dev, t, col):
    return (t.offset + 4 * col) % dev.align == 0


def _from(t, col, n):
    """t's f32 elements from `col` on, as a flat [n] view (no copy; the view never releases)."""
    return Tensor(t.device, (n,), buffer=t.buffer, offset=t.offset + 4 * col)


def _columns(batch, t, M, V, r0, n):
    """(tensor, row stride, temporary) reading columns [r0, r0 + n) of t [M, V]: in place when
    the binding offset is legal, else a [M, n] copy (the caller releases the temporary)."""
    if r0 == 0 or _aligned(batch.device, t, r0):
        return _from(t, r0, M * V - r0), V, None
    tmp = Tensor(batch.device, (M, n))
    copy_columns(batch, t, tmp, 1, M, n, src_col=r0)
    return tmp, n, tmp


def linear(batch, x, w, y, M, bias=None, accumulate=False):
    """y[M, V] (+)= x[M, K] @ W^T (+ bias[V]) for W a RowChunks [V, K]; x a Tensor or NormedRows."""
    dev = batch.device
    V, K = w.shape
    fmt = w.dtype
    rows_matvec = (M <= L.MATVEC_MAX_M and L._matvec_ok(dev)
                   and (fmt != "f32" or L._rows_kernel(dev, K)))
    rpt = tpr = stage = None
    if rows_matvec:        # the whole table's choices (and plan entry), for every part
        rpt, tpr, stage = weight_format.choices(dev, fmt, K, V, M)
    if isinstance(x, NormedRows) and not (rows_matvec and x.w is not None and K % 4 == 0):
        x = x.materialize(batch)              # once, not once per block
    for r0, r1, part in w.parts:
        n = r1 - r0
        b = _from(bias, r0, n) if bias is not None else None
        if b is not None and r0 and not _aligned(dev, bias, r0):
            raise ValueError(f"a bias split at row {r0} is not 256-byte aligned")
        direct = M == 1 and (r0 == 0 or _aligned(dev, y, r0))
        out = _from(y, r0, n).view((1, n)) if direct else Tensor(dev, (M, n))
        acc = accumulate and direct
        if rows_matvec:
            weight_format.matvec(batch, x, [part], [out], M, bias=b, accumulate=acc, tpr=tpr,
                                 rpt=rpt, stage=stage)
        else:
            L.matmul(batch, x, part, out, M, n, K, (K, 1, 1, K), bias=b, accumulate=acc)
        if not direct:
            copy_columns(batch, out, y, 1, M, n, dst_col=r0, accumulate=accumulate)
            out.release()
    return y


def backward_input(batch, dy, w, dx, M, accumulate=False):
    """dx[M, K] (+)= dy[M, V] @ W for W a RowChunks [V, K] (the blocks' shares added up)."""
    V, K = w.shape
    for i, (r0, r1, part) in enumerate(w.parts):
        a, stride, tmp = _columns(batch, dy, M, V, r0, r1 - r0)
        L.matmul(batch, a, part, dx, M, K, r1 - r0, (stride, 1, K, 1),
                 accumulate=accumulate or i > 0)
        if tmp is not None:
            tmp.release()
    return dx


def backward_weight(batch, dy, x, r0, r1, dw, M, accumulate=False):
    """dw[r1 - r0, K] (+)= dy[:, r0:r1]^T @ x[M, K]: the gradient of one row block."""
    V, K = dy.shape[-1], x.shape[-1]
    a, stride, tmp = _columns(batch, dy, M, V, r0, r1 - r0)
    L.matmul(batch, a, x, dw, r1 - r0, K, M, (1, stride, K, 1), accumulate=accumulate)
    if tmp is not None:
        tmp.release()
    return dw
