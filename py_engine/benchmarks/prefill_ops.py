"""The prefill's non-GEMM kernels alone, through whichever backend runs the bench: Mamba-1's
selective scan forward (the lanes kernel a real GPU takes, its chunks as the engine picks them)
and the causal conv at mamba-1.4b's shape, T tokens. As `prefill_gemm` found the GEMMs' gap
between Dawn and wgpu, this times these two on each (`mambaweb bench --dawn --only prefill_ops`,
then `--native`), each as py_engine/benchmarks/timing.py times an op."""
from py_engine.benchmarks.timing import seconds_per_call
from py_engine.gpu.tensor import Tensor
from py_engine.ops import conv1d as conv_ops
from py_engine.ops import elementwise as ew
from py_engine.ops import selective_scan as scan_ops

SHAPE = dict(T=1024, I=4096, N=16, K=4)     # mamba-1.4b: d_inner 4096, d_state 16, d_conv 4
MAX_REPS = 256


async def run(device, T=SHAPE["T"], I=SHAPE["I"], N=SHAPE["N"], K=SHAPE["K"], min_seconds=0.3):
    made = []

    def tensor(shape, value):
        t = Tensor(device, shape)
        made.append(t)
        b = device.batch()
        ew.fill(b, t, value)
        b.submit()
        return t

    u, delta, z = tensor((1, T, I), 0.5), tensor((1, T, I), -1.0), tensor((1, T, I), 0.25)
    A_log, D, dt_bias = tensor((I, N), 0.0), tensor((I,), 1.0), tensor((I,), 0.1)
    B, C = tensor((1, T, N), 0.25), tensor((1, T, N), 0.5)
    w, cb = tensor((I, K), 0.25), tensor((I,), 0.0)
    out = []
    try:
        def scan(b):
            y, h, _ = scan_ops.selective_scan_forward(b, u, delta, A_log, B, C, D=D, z=z,
                                                      dt_bias=dt_bias)
            y.release()
            h.release()

        s, reps = await seconds_per_call(device, scan, min_seconds, MAX_REPS)
        us = 1e6 * s
        out.append({"op": "selective_scan_forward", "kernel": scan_ops.scan_kernel(device),
                    "T": T, "I": I, "N": N, "us": us, "reps": reps})

        def conv(b):
            y, _ = conv_ops.conv1d_forward(b, u, w, cb, silu=True)
            y.release()

        s, reps = await seconds_per_call(device, conv, min_seconds, MAX_REPS)
        us = 1e6 * s
        out.append({"op": "conv1d_forward", "T": T, "I": I, "K": K, "us": us, "reps": reps})
        b = device.batch()                    # one more of each, read back: finite values
        y, h, _ = scan_ops.selective_scan_forward(b, u, delta, A_log, B, C, D=D, z=z,
                                                  dt_bias=dt_bias)
        c, _ = conv_ops.conv1d_forward(b, u, w, cb, silu=True)
        b.submit()
        out.append({"check": [(await y.to_list())[-1], (await c.to_list())[-1]]})
        for t in (y, h, c):
            t.release()
    finally:
        for t in made:
            t.release()
    return out
