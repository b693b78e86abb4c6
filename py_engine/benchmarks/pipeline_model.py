"""What Generator.stream's pipeline allows a decode stream, from its parts' measured times.

A stream (py_engine/models/generate.py) launches groups of steps -- the ramp's sizes first,
then `group` each -- keeping `depth` groups queued; the host encodes and submits a group (host
ms a step), the GPU runs it once it is submitted and the one before has run (GPU ms a step),
and its ids arrive a readback later; the host waits for the oldest group's ids before it
launches another. If each group ran on the GPU as long as a group alone does, a stream of n
tokens would take `stream_ms(...)`: the bench reports it beside what the stream took, so a
stream slower than its pipeline shows a cost that neither part measures alone (on an H100,
mamba-130m f16 streamed at 0.498 ms a token where this gives 0.477, 2026-12-06).

Pure stdlib: imported inside Pyodide.
"""


def stream_ms(n_tokens, host_ms, gpu_ms, readback_ms, depth, group, ramp=()):
    """(ms the stream takes from its first launch to its last ids, the GPU's busy fraction of
    it). host_ms, gpu_ms: a step's host (encode + submit) and GPU time; readback_ms: a group's
    ids after its GPU work ends; ramp: the first groups' sizes (Generator.ramp)."""
    if n_tokens <= 0:
        return 0.0, 0.0
    sizes, remaining = list(ramp), n_tokens
    host = gpu_free = busy = 0.0
    arrivals = []                        # when each queued group's ids arrive, oldest first
    end = 0.0
    while remaining > 0 or arrivals:
        while remaining > 0 and len(arrivals) < depth:
            k = min(sizes.pop(0) if sizes else group, remaining)
            remaining -= k
            host += host_ms * k                      # encoded and submitted
            start = max(host, gpu_free)              # after the group before it has run
            gpu_free = start + gpu_ms * k
            busy += gpu_ms * k
            arrivals.append(gpu_free + readback_ms)
        host = end = max(host, arrivals.pop(0))      # the host waits for the oldest's ids
    return end, (busy / end if end > 0 else 0.0)


def pipeline_report(decode, depth, ramp):
    """The bench's decode report's pipeline fields (decode_tokens_per_s's `out`: its
    host_ms_per_token, gpu_ms_per_token, readback_ms, group and tokens): the stream's ms a
    token by stream_ms, the busy fraction it allows, and the stream's ms a token over it
    (near 1: the stream loses nothing to the pipeline's parts' costs measured apart). {} where
    a part is missing or the group is time-sized ("auto")."""
    group = decode.get("group")
    parts = [decode.get(k) for k in ("host_ms_per_token", "gpu_ms_per_token", "readback_ms")]
    if not isinstance(group, int) or any(p is None for p in parts):
        return {}
    n = decode["tokens"]
    total, busy = stream_ms(n, *parts, depth=depth, group=group, ramp=ramp)
    return {"pipeline_ms_per_token": total / n, "pipeline_gpu_busy": busy,
            "stream_over_pipeline": decode["ms_per_token"] / (total / n)}
