"""Embedding gather and scatter-add backward (shaders/embedding_{forward,backward}.wgsl).
ids are u32."""
from py_engine.ops._common import out_like, params
from py_engine.ops.loop_budget import ALIGN_ROWS, shifted, spans, window_len


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
    # one thread walks every token for its column: windows of tokens past the loop-pass budget
    # (lavapipe; py_engine/ops/loop_budget.py); the kernel adds into dweight, so they chain
    for t0, tn in spans(ids.numel, window_len(1, fixed=8, align=ALIGN_ROWS)):
        u = dev.uniform(params(tn, D, V, 0))
        batch.run("embedding_backward", "embedding_backward",
                  [u, shifted(ids.binding, 4 * t0), shifted(dy.binding, 4 * t0 * D),
                   dweight.binding], -(-D // 64))
    return dweight
