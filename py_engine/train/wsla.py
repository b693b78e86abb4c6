"""WSLA on a row range of a GPU piece: train rows [r0, r1) of a weight piece, keep the rest
exactly as it was.

Mamba-2's B and C projections are rows [I, I + 2GN) of in_proj's x|B|C piece [I + 2GN, D]
(the conv reads the block as one tensor, so it is not split further). The trainer holds the
whole piece as a parameter (the tape computes its whole gradient; the B/C rows of that gradient
are the exact gradient), and this mask, each step, inside the step's one submit:
  * before the optimizer: zeroes the gradient outside [r0, r1), so the global norm, clipping
    and the AdamW moments see the B/C rows alone (the other rows' moments stay 0, so Adam moves
    them by 0);
  * after the optimizer: copies the frozen rows back from a copy taken at the start, undoing the
    decoupled weight decay AdamW applies to the whole piece.
So the result equals AdamW over a parameter that is only those rows. Copies are buffer-to-buffer
(4-byte aligned, no binding-offset limits).
"""
from math import prod

from py_engine.gpu.tensor import Tensor
from py_engine.ops.elementwise import fill


class RowMask:
    def __init__(self, device, param, grad, r0, r1):
        rows = param.shape[0]
        if not 0 <= r0 < r1 <= rows:
            raise ValueError(f"WSLA rows [{r0}, {r1}) lie outside a piece of {rows} rows")
        self.param, self.grad = param, grad
        row_bytes = 4 * prod(param.shape[1:])
        # byte ranges (from the piece's start) of the rows that stay frozen
        self.frozen = [(a * row_bytes, (b - a) * row_bytes) for a, b in ((0, r0), (r1, rows))
                       if b > a]
        self.trained_numel = (r1 - r0) * prod(param.shape[1:])
        total = sum(n for _, n in self.frozen)
        self.keep = Tensor(device, (total // 4,))            # the frozen rows, as loaded
        self.zeros = Tensor(device, (max((n for _, n in self.frozen), default=4) // 4,))
        batch = device.batch()
        fill(batch, self.zeros, 0.0)
        at = 0
        for start, n in self.frozen:
            batch.copy(param.buffer, param.offset + start, self.keep.buffer,
                       self.keep.offset + at, n)
            at += n
        batch.submit()

    def mask_grad(self, batch):
        for start, n in self.frozen:
            batch.copy(self.zeros.buffer, self.zeros.offset, self.grad.buffer,
                       self.grad.offset + start, n)

    def restore(self, batch):
        at = 0
        for start, n in self.frozen:
            batch.copy(self.keep.buffer, self.keep.offset + at, self.param.buffer,
                       self.param.offset + start, n)
            at += n

    def release(self):
        self.keep.release()
        self.zeros.release()
