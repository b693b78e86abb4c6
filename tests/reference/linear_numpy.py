"""Float64 numpy reference of Linear (shaders/matmul.wgsl for the products, forward and
backward; shaders/linear_backward.wgsl for the bias gradient).

Weights are PyTorch layout ``W[out, in]``: ``y = x @ W.T + b``.
"""

def linear(x, W, b=None):
    """x [..., in], W [out, in], b [out] -> y [..., out] = x @ W.T + b"""
    y = x @ W.T
    return y if b is None else y + b


def linear_backward(dy, x, W, has_bias=False):
    """-> (dx [..., in] = dy @ W,  dW [out, in] = sum_{...} dy^T x,  db [out] = sum_{...} dy or None)"""
    dx = dy @ W
    dy2 = dy.reshape(-1, W.shape[0])
    x2 = x.reshape(-1, W.shape[1])
    dW = dy2.T @ x2
    db = dy2.sum(0) if has_bias else None
    return dx, dW, db
