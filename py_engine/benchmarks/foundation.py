"""Foundation benchmarks, run inside the engine (browser or native): matmul throughput and
the cost of a dispatch. Timed with the host clock around submit + queue drain."""
import time

from py_engine.benchmarks.timing import seconds_per_call
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops.linear import linear_forward

MATMUL_SHAPES = ((1, 4096, 4096), (64, 1024, 1024), (512, 2048, 2048))


def _now():
    return time.perf_counter()


async def matmul_gflops(device, M, K, N, min_seconds=0.5):
    x = Tensor(device, (M, K))
    w = Tensor(device, (N, K))
    b = device.batch()
    ew.fill(b, x, 0.5)
    ew.fill(b, w, 0.25)
    b.submit()
    y = Tensor(device, (M, N))
    sec, reps = await seconds_per_call(device, lambda b: linear_forward(b, x, w, out=y),
                                       min_seconds, 1024)
    check = (await y.to_list())[0]
    for t in (x, w, y):
        t.release()
    return {"M": M, "K": K, "N": N, "reps": reps, "ms_per_matmul": 1000 * sec,
            "gflops": 2.0 * M * K * N / sec / 1e9, "check": check, "check_expected": 0.125 * K}


async def dispatch_overhead(device, n=1000, submits=100):
    x = Tensor.from_list(device, (64,), [1.0] * 64)
    y = Tensor(device, (64,))
    # warm-up
    b = device.batch()
    ew.silu(b, x, out=y)
    b.submit()
    await device.finish()
    # n dispatches in one batch: record (Python) + encode/submit (one JS call) + GPU
    t0 = _now()
    b = device.batch()
    for _ in range(n):
        ew.silu(b, x, out=y)
    t1 = _now()
    b.submit()
    t2 = _now()
    await device.finish()
    t3 = _now()
    # a recorded batch replayed: the decode-step path
    b = device.batch()
    for _ in range(n):
        ew.silu(b, x, out=y)
    rec = b.record()
    rec.replay()
    await device.finish()
    t4 = _now()
    rec.replay()
    t5 = _now()
    await device.finish()
    t6 = _now()
    # separate submits of one dispatch each, each waited for (round trip)
    t7 = _now()
    for _ in range(submits):
        b = device.batch()
        ew.silu(b, x, out=y)
        b.submit()
        await device.finish()
    t8 = _now()
    x.release()
    y.release()
    us = 1e6
    return {"dispatches": n,
            "record_us_per_dispatch": us * (t1 - t0) / n,
            "encode_submit_us_per_dispatch": us * (t2 - t1) / n,
            "total_us_per_dispatch_one_batch": us * (t3 - t0) / n,
            "replay_encode_us_per_dispatch": us * (t5 - t4) / n,
            "replay_total_us_per_dispatch": us * (t6 - t4) / n,
            "us_per_separate_submit_roundtrip": us * (t8 - t7) / submits}


async def run_all(device):
    out = {"matmul": [], "dispatch": None}
    for M, K, N in MATMUL_SHAPES:
        out["matmul"].append(await matmul_gflops(device, M, K, N))
    out["dispatch"] = await dispatch_overhead(device)
    return out
