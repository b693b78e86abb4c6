"""The measured ceilings a GPU bench run judges itself against, on the same device and backend:
read bandwidth of a plain streaming kernel (shaders/bench_read.wgsl) and the cost of one
dispatch in a replayed recording (the decode path). Timed with the host clock around
submit + queue drain, over enough repetitions to make the submit latency small."""
import time

from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops._common import params

MIB = 1 << 20


async def read_bandwidth(device, mib=512, min_seconds=0.3):
    """GB/s of a buffer of `mib` MiB (capped by the device's binding limit) read by 16-byte loads."""
    limit = int(device.info.get("limits", {}).get("maxStorageBufferBindingSize", 128 * MIB))
    nbytes = min(mib * MIB, limit) // 16 * 16
    src = Tensor(device, (nbytes // 4,))
    threads = 256 * 1024                      # enough to fill any current GPU
    out = Tensor(device, (threads,))
    b = device.batch()
    ew.fill(b, src, 1.0)
    b.submit()
    u = device.uniform(params(nbytes // 16, threads, 0, 0))

    def run(reps):
        b = device.batch()
        for _ in range(reps):
            b.run("bench_read", "read_bandwidth", [u, src.binding, out.binding], threads // 256)
        b.submit()

    run(1)
    await device.finish()
    reps = 1
    while True:
        t0 = time.perf_counter()
        run(reps)
        await device.finish()
        dt = time.perf_counter() - t0
        if dt >= min_seconds or reps >= 4096:
            break
        reps *= 2
    check = (await out.to_list())[0]
    src.release()
    out.release()
    return {"bytes": nbytes, "reps": reps, "gb_per_s": nbytes * reps / dt / 1e9,
            "check_ok": check > 0}


async def run(device):
    from py_engine.benchmarks.foundation import dispatch_overhead
    replay = (await dispatch_overhead(device, submits=10))["replay_total_us_per_dispatch"]
    return {"read": await read_bandwidth(device), "replay_us_per_dispatch": replay}
