"""LoRA's low-rank branch on a frozen linear weight (y = x W^T + b + s (x A^T) B^T).

Adapters are registered per device: `device.lora[id(W)] = Adapted(A, B, s)` for each GPU weight
piece W [N, K] with A [r, K] and B [N, r] (B the piece's rows of the full B when W is a row
block of a fused HF weight; pieces of one HF weight share A). `linear_forward` and
`linear_accumulate` (py_engine/ops/linear.py) add the branch for any adapted weight, so every
path (training forward, prefill, the recorded decode step) sees the adapter without the mixers
knowing; the autograd rules (py_engine/autograd/functional.py) add its gradients.
Dispatches per adapted linear: 3 (x A^T, scale by s, accumulate the B product into y).
"""


class Adapted:
    __slots__ = ("A", "B", "s")

    def __init__(self, A, B, s):
        self.A, self.B, self.s = A, B, float(s)


def adapter_of(device, w):
    table = getattr(device, "lora", None)
    return table.get(id(w)) if table else None


def branch_forward(batch, x, ad, y, M):
    """y += s (x A^T) B^T for x [M, K] (y [M, N] already holds x W^T + b)."""
    from py_engine.ops.elementwise import scale
    from py_engine.ops.linear import matmul, raw_linear
    r = ad.A.shape[0]
    N = ad.B.shape[0]
    xa = raw_linear(batch, x, ad.A)                       # [M, r]
    xs = scale(batch, xa, ad.s)
    xa.release()
    matmul(batch, xs, ad.B, y, M, N, r, (r, 1, 1, r), accumulate=True)
    xs.release()
