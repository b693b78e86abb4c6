"""Elementwise ops (shaders/elementwise_forward.wgsl): add, mul, SiLU, softplus, fill,
accumulate, scale; the SiLU and softplus derivatives (shaders/elementwise_backward.wgsl)."""
from py_engine.ops._common import ACCUMULATE, f32_bits, fold, out_like, params

FORWARD = "elementwise_forward"
BACKWARD = "elementwise_backward"


def _run(batch, shader, entry, a, b, out, accumulate=False, extra=0):
    dev = batch.device
    n = a.numel if a is not None else out.numel
    u = dev.uniform(params(n, ACCUMULATE if accumulate else 0, extra, 0))
    x, y = fold(-(-n // 256))
    batch.run(shader, entry, [u, a.binding if a is not None else None,
                              b.binding if b is not None else None, out.binding], x, y)
    return out


def _check_same(a, b, op):
    if a.numel != b.numel:
        raise ValueError(f"{op}: shapes {list(a.shape)} and {list(b.shape)} differ")


def add(batch, a, b, out=None, accumulate=False):
    _check_same(a, b, "add")
    return _run(batch, FORWARD, "add_forward", a, b, out_like(batch.device, a.shape, out),
                accumulate)


def mul(batch, a, b, out=None, accumulate=False):
    _check_same(a, b, "mul")
    return _run(batch, FORWARD, "mul_forward", a, b, out_like(batch.device, a.shape, out),
                accumulate)


def silu(batch, x, out=None):
    return _run(batch, FORWARD, "silu_forward", x, None, out_like(batch.device, x.shape, out))


def silu_backward(batch, x, dy, out=None, accumulate=False):
    _check_same(x, dy, "silu_backward")
    return _run(batch, BACKWARD, "silu_backward", x, dy, out_like(batch.device, x.shape, out),
                accumulate)


def softplus(batch, x, out=None):
    return _run(batch, FORWARD, "softplus_forward", x, None, out_like(batch.device, x.shape, out))


def softplus_backward(batch, x, dy, out=None, accumulate=False):
    _check_same(x, dy, "softplus_backward")
    return _run(batch, BACKWARD, "softplus_backward", x, dy, out_like(batch.device, x.shape, out),
                accumulate)


def fill(batch, out, value=0.0):
    return _run(batch, FORWARD, "fill_forward", None, None, out, extra=f32_bits(value))


def accumulate(batch, out, a):
    """out += a (a and out must be different buffers)."""
    _check_same(a, out, "accumulate")
    return _run(batch, FORWARD, "accumulate_forward", a, None, out)


def scale(batch, a, s, out=None, accumulate=False):
    """out (+)= s * a (s a Python float)."""
    out = out_like(batch.device, a.shape, out)
    _check_same(a, out, "scale")
    return _run(batch, FORWARD, "scale_forward", a, None, out, accumulate, extra=f32_bits(s))
