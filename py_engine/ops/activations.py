"""MLP activations (shaders/activations_{forward,backward}.wgsl): NemotronH's non-gated relu^2 and
the gated SwiGLU, forward and backward.

Math (elementwise over M rows of C channels):
    relu2:   y = relu(x)^2                    dx = dy * 2 relu(x)
    swiglu:  y = silu(gate) * up              dgate = dy * up * silu'(gate),  dup = dy * silu(gate)
             silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)   (lib/activations.wgsl)

Shapes: every operand is [M, C] (or [Bsz, T, C]: M is every dim but the last), a Tensor or a
`Cols` view (a column window of a row-major matrix): gate and up are usually the two halves of
one fused up-projection output [M, 2C], and dgate / dup the two halves of its gradient, written
in place. When dgate and dup are windows of one buffer, the kernel binds that buffer once
(two writable bindings of one buffer in one dispatch are a WebGPU validation error).

Dispatches: 1 per call, one thread per element, 256-thread workgroups, grid folded into y when
M*C exceeds 65535*256. No reductions: results do not depend on the grid.
"""
from py_engine.ops._common import fold, out_like, params
from py_engine.ops.conv1d import Cols, rw_dummy, view  # noqa: F401  (Cols re-exported)

FORWARD = "activations_forward"
BACKWARD = "activations_backward"
SAME_OUT = 1    # flags: dgate and dup live in one buffer (bound once, at dgate's slot)

_NONE = (None, 0, 0)


def _mc(a, name):
    shape = tuple(a.shape)
    if len(shape) < 1:
        raise ValueError(f"{name} must have a channel dim, got {list(shape)}")
    M = 1
    for d in shape[:-1]:
        M *= d
    return M, shape[-1]


def _same(a, b, na, nb):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{na} has shape {list(a.shape)}, {nb} has {list(b.shape)}")


def _uniform(dev, M, C, flags, v1=_NONE, v2=_NONE, v3=_NONE, v4=_NONE, v5=_NONE):
    return dev.uniform(params(M, C, flags, 0, v1[1], v1[2], v2[1], v2[2], v3[1], v3[2],
                              v4[1], v4[2], v5[1], v5[2], 0, 0))


def _grid(M, C):
    return fold(-(-(M * C) // 256))


def _no_alias(outs, ins, op):
    for o in outs:
        for i in ins:
            if i is not None and o.buffer is i.buffer:
                raise ValueError(f"{op}: an output shares a buffer with an input (a buffer cannot be "
                                 "bound read-only and writable in one dispatch)")


def relu2_forward(batch, x, out=None):
    """x [M, C] (Tensor or Cols) -> y = relu(x)^2 [M, C] (new Tensor, or `out`: Tensor or Cols)."""
    dev = batch.device
    M, C = _mc(x, "x")
    out = out_like(dev, tuple(x.shape), out)
    _no_alias([out], [x], "relu2_forward")
    xv, ov = view(x), view(out)
    u = _uniform(dev, M, C, 0, xv, _NONE, ov)
    gx, gy = _grid(M, C)
    batch.run(FORWARD, "relu2_forward", [u, xv[0], None, ov[0]], gx, gy)
    return out


def relu2_backward(batch, dy, x, out=None):
    """dy, x [M, C] (Tensors or Cols) -> dx = dy * 2 relu(x) [M, C] (new Tensor, or `out`)."""
    dev = batch.device
    M, C = _mc(x, "x")
    _same(dy, x, "dy", "x")
    out = out_like(dev, tuple(x.shape), out)
    _no_alias([out], [dy, x], "relu2_backward")
    gv, xv, ov = view(dy), view(x), view(out)
    u = _uniform(dev, M, C, 0, gv, xv, _NONE, ov)
    gx, gy = _grid(M, C)
    batch.run(BACKWARD, "relu2_backward", [u, gv[0], xv[0], None, ov[0], None], gx, gy)
    return out


def swiglu_forward(batch, gate, up, out=None):
    """gate, up [M, C] (Tensors or Cols, e.g. two halves of one [M, 2C]) -> y = silu(gate) * up."""
    dev = batch.device
    M, C = _mc(gate, "gate")
    _same(gate, up, "gate", "up")
    out = out_like(dev, tuple(gate.shape), out)
    _no_alias([out], [gate, up], "swiglu_forward")
    av, bv, ov = view(gate), view(up), view(out)
    u = _uniform(dev, M, C, 0, av, bv, ov)
    gx, gy = _grid(M, C)
    batch.run(FORWARD, "swiglu_forward", [u, av[0], bv[0], ov[0]], gx, gy)
    return out


def swiglu_backward(batch, dy, gate, up, dgate=None, dup=None):
    """dy, gate, up [M, C] -> (dgate, dup) [M, C]; dgate / dup: optional destinations (Tensors or
    Cols, e.g. the two halves of the fused up-projection's gradient [M, 2C]), overwritten."""
    dev = batch.device
    M, C = _mc(gate, "gate")
    _same(gate, up, "gate", "up")
    _same(dy, gate, "dy", "gate")
    dgate = out_like(dev, tuple(gate.shape), dgate)
    dup = out_like(dev, tuple(gate.shape), dup)
    _no_alias([dgate, dup], [dy, gate, up], "swiglu_backward")
    same = dgate.buffer is dup.buffer
    if same and isinstance(dgate, Cols) and isinstance(dup, Cols) and \
            dgate.start < dup.start + dup.width and dup.start < dgate.start + dgate.width:
        raise ValueError("swiglu_backward: dgate and dup windows overlap")
    if same and not (isinstance(dgate, Cols) and isinstance(dup, Cols)):
        raise ValueError("swiglu_backward: dgate and dup are the same tensor")
    gv, av, bv, dav, dbv = view(dy), view(gate), view(up), view(dgate), view(dup)
    u = _uniform(dev, M, C, SAME_OUT if same else 0, gv, av, bv, dav, dbv)
    gx, gy = _grid(M, C)
    batch.run(BACKWARD, "swiglu_backward",
              [u, gv[0], av[0], bv[0], dav[0], rw_dummy(dev) if same else dbv[0]], gx, gy)
    return dgate, dup
