"""Mean softmax cross-entropy with ignore-index (negative targets),
shaders/cross_entropy_{forward,backward}.wgsl."""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import ACCUMULATE, fold, out_like, params


def cross_entropy_forward(batch, logits, targets):
    """logits [T, V] f32, targets [T] i32 -> (loss [2] = (mean loss, n_valid), stats)."""
    dev = batch.device
    V = logits.shape[-1]
    T = logits.numel // V
    stats = Tensor(dev, (3, T))
    loss = Tensor(dev, (2,))
    u = dev.uniform(params(T, V, 0, 1.0))
    gx, gy = fold(T)
    batch.run("cross_entropy_forward", "cross_entropy_forward",
              [u, logits.binding, targets.binding, stats.binding], gx, gy)
    batch.run("cross_entropy_forward", "cross_entropy_reduce",
              [u, None, None, stats.binding, loss.binding], 1)
    return loss, stats


def cross_entropy_backward(batch, logits, targets, stats, loss, scale=1.0, out=None, accumulate=False):
    dev = batch.device
    V = logits.shape[-1]
    T = logits.numel // V
    dx = out_like(dev, logits.shape, out)
    u = dev.uniform(params(T, V, ACCUMULATE if accumulate else 0, float(scale)))
    batch.run("cross_entropy_backward", "cross_entropy_backward",
              [u, logits.binding, targets.binding, stats.binding, dx.binding, loss.binding],
              -(-V // 64), T)
    return dx
