"""Per-kernel GPU time on the native backend, from WebGPU timestamp queries.

    prof = KernelProfiler(device)      # device: a NativeDevice with the timestamp-query feature
    device.profiler = prof             # BEFORE recording anything to be profiled
    ... run work ...
    table = await prof.collect()       # [{"kernel": "shader:entry", "calls", "gpu_us", ...}]

While a profiler is attached every dispatch runs in its own compute pass with a timestamp
written at the pass's start and end, so `gpu_us` is each kernel's own GPU time, without the
host's encoding or the queue's gaps. One pass per dispatch adds a little GPU time between
kernels (the pass boundary), which is why this is a profiling mode and not how decode runs.
Timestamps are nanoseconds (WebGPU's unit; wgpu-native converts the driver's ticks).
Host-only: imports wgpu.
"""
import struct

import wgpu

CAPACITY = 4096        # timestamp slots per submit (the most a query set holds): 2048 dispatches;
                       # later ones in the same submit are run but not timed


class KernelProfiler:
    def __init__(self, device):
        if "timestamp-query" not in device.features:
            raise ValueError("this adapter has no timestamp-query feature: per-kernel GPU "
                             "time cannot be measured on it")
        self.device = device
        self.query_set = device.gpu.create_query_set(type=wgpu.QueryType.timestamp,
                                                     count=CAPACITY)
        self.pending = []      # (readback awaitable, [kernel names])
        self.untimed = 0

    def names_of(self, encoded):
        return [self.device._layouts[id(c[1])][2] for c in encoded if c[0] == 0]

    def submit(self, encoded):
        """Encode `encoded` (NativeDevice._encode_commands's list, public-API form) with one
        timed pass per dispatch, submit it, and queue the timestamps' readback."""
        dev = self.device
        enc = dev.gpu.create_command_encoder()
        names, slot = [], 0
        for c in encoded:
            if c[0] == 0:
                timed = slot + 2 <= CAPACITY
                tw = ({"query_set": self.query_set, "beginning_of_pass_write_index": slot,
                       "end_of_pass_write_index": slot + 1} if timed else None)
                cpass = enc.begin_compute_pass(timestamp_writes=tw) if tw else \
                    enc.begin_compute_pass()
                cpass.set_pipeline(c[1])
                cpass.set_bind_group(0, c[2])
                cpass.dispatch_workgroups(c[3], c[4], c[5])
                cpass.end()
                if timed:
                    names.append(dev._layouts[id(c[1])][2])
                    slot += 2
                else:
                    self.untimed += 1
            else:
                enc.copy_buffer_to_buffer(c[1], c[2], c[3], c[4], c[5])
        if slot:
            buf = dev._create_buffer(slot * 8, wgpu.BufferUsage.QUERY_RESOLVE
                                     | wgpu.BufferUsage.COPY_SRC, "timestamps")
            enc.resolve_query_set(self.query_set, 0, slot, buf.gpu, 0)
        dev._queue.submit([enc.finish()])
        if slot:
            self.pending.append((dev.read_begin(buf), names, buf))

    async def collect(self):
        """-> rows sorted by total GPU time: kernel, calls, gpu_us (total), us_per_call,
        share (of all timed GPU time). Clears what was gathered."""
        totals = {}
        pending, self.pending = self.pending, []
        for wait, names, buf in pending:
            data = await wait
            buf.gpu.destroy()
            stamps = struct.unpack(f"<{len(names) * 2}Q", data)
            for i, name in enumerate(names):
                t = totals.setdefault(name, [0, 0])
                t[0] += 1
                t[1] += max(0, stamps[2 * i + 1] - stamps[2 * i])
        all_ns = sum(t[1] for t in totals.values()) or 1
        rows = [{"kernel": k, "calls": c, "gpu_us": round(ns / 1e3, 1),
                 "us_per_call": round(ns / 1e3 / c, 2), "share": round(ns / all_ns, 4)}
                for k, (c, ns) in totals.items()]
        return sorted(rows, key=lambda r: -r["gpu_us"])
