"""Sum / mean of a tensor (shaders/reduce.wgsl), two passes."""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import params

GROUPS_MAX = 256


def reduce_sum(batch, x, mean=False, out=None):
    dev = batch.device
    n = x.numel
    groups = max(1, min(GROUPS_MAX, -(-n // 4096)))
    partial = Tensor(dev, (groups,))
    out = out if out is not None else Tensor(dev, (1,))
    batch.run("reduce", "sum_partial", [dev.uniform(params(n, 1.0)), x.binding, partial.binding], groups)
    scale = 1.0 / n if mean else 1.0
    batch.run("reduce", "sum_final", [dev.uniform(params(groups, scale)), partial.binding, out.binding], 1)
    partial.release()  # safe: the pool hands it out again only to later-recorded work
    return out


def checksum(batch, x, out=None):
    """Exact u32 checksum of x's 4-byte words (see shaders/reduce.wgsl): -> u32 Tensor [groups]
    of partial sums; their wrapping sum is the checksum (the caller adds them mod 2^32)."""
    dev = batch.device
    n = x.nbytes // 4
    groups = max(1, min(GROUPS_MAX, -(-n // 4096)))
    out = out if out is not None else Tensor(dev, (groups,), "u32")
    batch.run("reduce", "checksum_partial",
              [dev.uniform(params(n, 1.0)), None, None, x.binding, out.binding], groups)
    return out
