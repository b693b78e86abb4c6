"""Sequence copies (shaders/sequence_forward.wgsl): time reversal within each sequence and
column windows of [Bsz*T, C] activations (concatenation along features and its inverse).

    reverse(x, Bsz, T)              y[b, t] = x[b, T-1-t]          x, y [Bsz*T, C]
    copy_columns(src, dst, ...)     dst[:, dst_col:dst_col+C] (+)= src[:, src_col:src_col+C]
                                    (optionally time-reversed on the way)
Reversal is its own adjoint; the adjoint of reading a column window is writing it, so every
backward is another call of `copy_columns`.
"""
from py_engine.ops._common import ACCUMULATE, fold, out_like, params

REVERSE = 1


def copy_columns(batch, src, dst, Bsz, T, C, src_col=0, dst_col=0, reverse=False,
                 accumulate=False):
    """dst[r', dst_col + c] (+)= src[r, src_col + c] for r < Bsz*T, c < C, with r' = r or its
    time-mirror in the same sequence. src [Bsz*T, Cs], dst [Bsz*T, Cd] (row strides Cs, Cd)."""
    rows = Bsz * T
    for name, t, col in (("src", src, src_col), ("dst", dst, dst_col)):
        stride = t.shape[-1]
        if t.numel != rows * stride:
            raise ValueError(f"copy_columns: {name} has shape {list(t.shape)}, expected "
                             f"[{rows}, *] for Bsz {Bsz} x T {T}")
        if col + C > stride:
            raise ValueError(f"copy_columns: {name} columns {col}..{col + C} exceed its "
                             f"{stride} columns")
    n = rows * C
    flags = (REVERSE if reverse else 0) | (ACCUMULATE if accumulate else 0)
    u = batch.device.uniform(params(n, T, C, flags, src.shape[-1], src_col, dst.shape[-1],
                                    dst_col))
    x, y = fold(-(-n // 256))
    batch.run("sequence_forward", "sequence_copy_forward", [u, src.binding, dst.binding], x, y)
    return dst


def reverse(batch, x, Bsz, T, out=None, accumulate=False):
    """x [Bsz*T, C] with each sequence's tokens in reverse order (a new tensor unless `out`)."""
    out = out_like(batch.device, x.shape, out)
    return copy_columns(batch, x, out, Bsz, T, x.shape[-1], reverse=True, accumulate=accumulate)
