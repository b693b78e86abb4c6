"""Embedding gather and scatter-add backward (shaders/embedding_{forward,backward}.wgsl).
ids are u32.

A table held as row blocks (py_engine/gpu/row_chunks.py: larger than one GPU binding) takes one
dispatch per block, each serving the ids in its rows: the first block writes zeros for the ids
it does not hold, the others leave those rows alone (an id past the vocabulary reads zeros, as
from a whole table). The backward scatters into each block's own gradient."""
from py_engine.gpu.row_chunks import RowChunks
from py_engine.ops._common import out_like, params
from py_engine.ops.loop_budget import ALIGN_ROWS, shifted, spans, window_len

KEEP_OTHERS = 1          # forward flags bit0: ids outside this block's rows write nothing


def embedding_forward(batch, ids, weight, out=None):
    dev = batch.device
    V, D = weight.shape
    T = ids.numel
    y = out_like(dev, tuple(ids.shape) + (D,), out)
    blocks = weight.parts if isinstance(weight, RowChunks) else [(0, V, weight)]
    for i, (r0, r1, w) in enumerate(blocks):
        if w.dtype != "f32":      # a narrow table (py_engine/ops/weight_format.py)
            from py_engine.ops.weight_format import dequantize
            dequantize(batch, w, ids=ids, out=y,
                       block=None if len(blocks) == 1 else (r0, i == 0))
            continue
        u = dev.uniform(params(T, D, r1 - r0, KEEP_OTHERS if i else 0, r0, 0, 0, 0))
        batch.run("embedding_forward", "embedding_forward",
                  [u, ids.binding, w.binding, y.binding], -(-D // 64), T)
    return y


def embedding_backward(batch, ids, dy, dweight, row0=0):
    """dweight[V, D] += scatter of dy[T, D] by ids (dweight must hold zeros or a sum). With
    row0: dweight is the gradient of the row block [row0, row0 + V) of a split table."""
    dev = batch.device
    V, D = dweight.shape
    # one thread walks every token for its column: windows of tokens past the loop-pass budget
    # (lavapipe; py_engine/ops/loop_budget.py); the kernel adds into dweight, so they chain
    for t0, tn in spans(ids.numel, window_len(1, fixed=8, align=ALIGN_ROWS)):
        u = dev.uniform(params(tn, D, V, 0, row0, 0, 0, 0))
        batch.run("embedding_backward", "embedding_backward",
                  [u, shifted(ids.binding, 4 * t0), shifted(dy.binding, 4 * t0 * D),
                   dweight.binding], -(-D // 64))
    return dweight
