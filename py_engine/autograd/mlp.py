"""Differentiable MLP activations (py_engine/ops/activations.py)."""
from py_engine.gpu.tensor import Tensor
from py_engine.ops.activations import (Cols, relu2_backward, relu2_forward, swiglu_backward,
                                       swiglu_forward)


def relu2(ctx, x):
    """relu(x)^2, elementwise."""
    y = relu2_forward(ctx.batch, x)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(y)
            if g is None:
                return
            tape.accumulate(batch, x, relu2_backward(batch, g, x))
            g.release()
        ctx.tape.record(rule)
    return y


def swiglu(ctx, u, F):
    """u [M, 2F] = [up | gate] (mamba_ssm's fc1 output order) -> silu(gate) * up [M, F].
    Backward: du [M, 2F] = [dup | dgate], both halves written by one dispatch."""
    up, gate = Cols(u, 0, F), Cols(u, F, F)
    y = swiglu_forward(ctx.batch, gate, up)
    if ctx.tape is not None:
        def rule(batch, tape):
            g = tape.pop(y)
            if g is None:
                return
            du = Tensor(batch.device, tuple(u.shape))
            swiglu_backward(batch, g, gate, up, dgate=Cols(du, F, F), dup=Cols(du, 0, F))
            g.release()
            tape.accumulate(batch, u, du)
        ctx.tape.record(rule)
    return y
