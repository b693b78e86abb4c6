"""How the kernel benchmarks time one op: recorded once and submitted (pipelines built), then
recorded `reps` times into one submit, reps doubling until that submit and the queue's drain
take `min_seconds` on the host clock (or reps reach `max_reps`)."""
import time


async def seconds_per_call(device, record, min_seconds, max_reps):
    """(seconds per call of record(batch), reps of the timed submit)."""
    b = device.batch()
    record(b)
    b.submit()
    await device.finish()
    reps = 1
    while True:
        t0 = time.perf_counter()
        b = device.batch()
        for _ in range(reps):
            record(b)
        b.submit()
        await device.finish()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds or reps >= max_reps:
            return elapsed / reps, reps
        reps *= 2
