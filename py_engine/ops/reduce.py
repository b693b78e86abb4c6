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
