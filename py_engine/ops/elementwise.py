"""Elementwise ops (shaders/elementwise.wgsl): add, mul, SiLU, softplus (+ backward), fill."""
from py_engine.ops._common import ACCUMULATE, f32_bits, fold, out_like, params


def _run(batch, entry, a, b, out, accumulate=False, extra=0):
    dev = batch.device
    n = a.numel if a is not None else out.numel
    u = dev.uniform(params(n, ACCUMULATE if accumulate else 0, extra, 0))
    x, y = fold(-(-n // 256))
    batch.run("elementwise", entry, [u, a.binding if a is not None else None,
                                     b.binding if b is not None else None, out.binding], x, y)
    return out


def _check_same(a, b, op):
    if a.numel != b.numel:
        raise ValueError(f"{op}: shapes {list(a.shape)} and {list(b.shape)} differ")


def add(batch, a, b, out=None, accumulate=False):
    _check_same(a, b, "add")
    return _run(batch, "add_forward", a, b, out_like(batch.device, a.shape, out), accumulate)


def mul(batch, a, b, out=None, accumulate=False):
    _check_same(a, b, "mul")
    return _run(batch, "mul_forward", a, b, out_like(batch.device, a.shape, out), accumulate)


def silu(batch, x, out=None):
    return _run(batch, "silu_forward", x, None, out_like(batch.device, x.shape, out))


def silu_backward(batch, x, dy, out=None, accumulate=False):
    _check_same(x, dy, "silu_backward")
    return _run(batch, "silu_backward", x, dy, out_like(batch.device, x.shape, out), accumulate)


def softplus(batch, x, out=None):
    return _run(batch, "softplus_forward", x, None, out_like(batch.device, x.shape, out))


def softplus_backward(batch, x, dy, out=None, accumulate=False):
    _check_same(x, dy, "softplus_backward")
    return _run(batch, "softplus_backward", x, dy, out_like(batch.device, x.shape, out), accumulate)


def fill(batch, out, value=0.0):
    return _run(batch, "fill_forward", None, None, out, extra=f32_bits(value))


def accumulate(batch, out, a):
    """out += a (a and out must be different buffers)."""
    _check_same(a, out, "accumulate")
    return _run(batch, "accumulate_forward", a, None, out)
