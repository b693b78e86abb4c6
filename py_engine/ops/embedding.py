"""Embedding gather and scatter-add backward (shaders/embedding_{forward,backward}.wgsl).
ids are u32."""
from py_engine.ops._common import out_like, params


def embedding_forward(batch, ids, weight, out=None):
    dev = batch.device
    V, D = weight.shape
    T = ids.numel
    y = out_like(dev, tuple(ids.shape) + (D,), out)
    if weight.dtype != "f32":      # a narrow table (py_engine/ops/weight_format.py)
        from py_engine.ops.weight_format import dequantize
        return dequantize(batch, weight, ids=ids, out=y)
    u = dev.uniform(params(T, D, V, 0))
    batch.run("embedding_forward", "embedding_forward", [u, ids.binding, weight.binding, y.binding],
              -(-D // 64), T)
    return y


def embedding_backward(batch, ids, dy, dweight):
    """dweight[V, D] += scatter of dy[T, D] by ids (dweight must hold zeros or a sum)."""
    dev = batch.device
    V, D = dweight.shape
    u = dev.uniform(params(ids.numel, D, V, 0))
    batch.run("embedding_backward", "embedding_backward",
              [u, ids.binding, dy.binding, dweight.binding], -(-D // 64))
    return dweight
