"""Per-kernel GPU time on the native backend, from WebGPU timestamp queries.

    prof = KernelProfiler(device)      # device: a NativeDevice with the timestamp-query feature
    device.profiler = prof             # BEFORE recording anything to be profiled
    ... run work ...
    table = await prof.collect()       # [{"kernel": "shader:entry", "calls", "gpu_us", ...}]

Three ways to time, picked by `in_pass` and `span`:
- in one pass (the default where the device has wgpu-native's timestamp-query-inside-passes):
  the dispatches are encoded as decode encodes them, one compute pass, with a timestamp
  written before the first and after each one; a dispatch's time is the step between its two
  stamps -- what it adds to the chain, its barrier and launch included. On an H200 the
  pass-per-dispatch mode below read 1.3-2.6x the token's real GPU time, this one is the
  measure to split a token's time by kernel.
- a pass per dispatch, timestamps at the pass's start and end: each kernel's own time, the
  pass boundaries' cost left out but their effect on clocks and caches not.
- `span=True`: a pass per run of dispatches (as decode encodes them), stamped only at its
  start and end -- one row, "pass", whose us_per_call is the run's time over its dispatches:
  what a dispatch costs back to back with no stamp between (the in-pass stamps themselves add
  ~7 us each on an H200, more than a small mat-vec takes; tools/sweep_matvec.py --chain).
Timestamps are nanoseconds (WebGPU's unit; wgpu-native converts the driver's ticks).
Host-only: imports wgpu.
"""
import struct

import wgpu

CAPACITY = 4096        # timestamp slots per submit (the most a query set holds): 2048 dispatches
                       # a pass each, ~4,095 in one pass; later ones are run but not timed


def _copy_ending_pass(enc, cpass, c):
    """A copy command c ends the open pass, as NativeDevice encodes it; -> no pass open."""
    if cpass is not None:
        cpass.end()
    enc.copy_buffer_to_buffer(c[1], c[2], c[3], c[4], c[5])
    return None


class KernelProfiler:
    def __init__(self, device, in_pass=None, span=False):
        if "timestamp-query" not in device.features:
            raise ValueError("this adapter has no timestamp-query feature: per-kernel GPU "
                             "time cannot be measured on it")
        inside = "timestamp-query-inside-passes" in device.features
        if in_pass and not inside:
            raise ValueError("this device has no timestamp-query-inside-passes feature: time "
                             "kernels with a pass each (in_pass=False)")
        self.in_pass = inside if in_pass is None else bool(in_pass)
        self.span = bool(span)
        self.device = device
        self.query_set = device.gpu.create_query_set(type=wgpu.QueryType.timestamp,
                                                     count=CAPACITY)
        self.pending = []      # (readback awaitable, [kernel names])
        self.untimed = 0

    def names_of(self, encoded):
        return [self.device._layouts[id(c[1])][2] for c in encoded if c[0] == 0]

    def submit(self, encoded):
        """Encode `encoded` (NativeDevice._encode_commands's list, public-API form) with its
        dispatches timed, submit it, and queue the timestamps' readback."""
        if self.span:
            return self._submit_span(encoded)
        if self.in_pass:
            return self._submit_in_pass(encoded)
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
        self._finish(enc, names, slot, [(2 * i, 2 * i + 1) for i in range(len(names))])

    def _submit_in_pass(self, encoded):
        """One pass per run of dispatches (a copy ends a pass, as in NativeDevice), a stamp
        before the run's first dispatch and after each: dispatch i spans stamps (i, i + 1)."""
        from wgpu.backends.wgpu_native.extras import write_timestamp
        dev = self.device
        enc = dev.gpu.create_command_encoder()
        names, spans, slot, cpass, stamped = [], [], 0, None, False
        for c in encoded:
            if c[0] == 0:
                if cpass is None:
                    cpass = enc.begin_compute_pass()
                    stamped = slot + 2 <= CAPACITY       # room for a start and one dispatch
                    if stamped:
                        write_timestamp(cpass, self.query_set, slot)
                        slot += 1
                cpass.set_pipeline(c[1])
                cpass.set_bind_group(0, c[2])
                cpass.dispatch_workgroups(c[3], c[4], c[5])
                stamped = stamped and slot < CAPACITY
                if stamped:
                    write_timestamp(cpass, self.query_set, slot)
                    names.append(dev._layouts[id(c[1])][2])
                    spans.append((slot - 1, slot))
                    slot += 1
                else:
                    self.untimed += 1
            else:
                cpass = _copy_ending_pass(enc, cpass, c)
        if cpass is not None:
            cpass.end()
        self._finish(enc, names, slot, spans)

    def _submit_span(self, encoded):
        """A pass per run of dispatches with timestamps at its start and end only: one span
        per pass, counted as that many calls of "pass"."""
        enc = self.device.gpu.create_command_encoder()
        names, spans, slot, cpass = [], [], 0, None
        for c in encoded:
            if c[0] == 0:
                if cpass is None:
                    if slot + 2 <= CAPACITY:
                        tw = {"query_set": self.query_set, "beginning_of_pass_write_index": slot,
                              "end_of_pass_write_index": slot + 1}
                        cpass = enc.begin_compute_pass(timestamp_writes=tw)
                        spans.append((slot, slot + 1))
                        names.append(["pass", 0])
                        slot += 2
                    else:
                        cpass = enc.begin_compute_pass()
                        names.append(None)
                cpass.set_pipeline(c[1])
                cpass.set_bind_group(0, c[2])
                cpass.dispatch_workgroups(c[3], c[4], c[5])
                if names[-1] is None:
                    self.untimed += 1
                else:
                    names[-1][1] += 1
            else:
                cpass = _copy_ending_pass(enc, cpass, c)
        if cpass is not None:
            cpass.end()
        self._finish(enc, [n for n in names if n is not None], slot, spans)

    def _finish(self, enc, names, slot, spans):
        dev = self.device
        if slot:
            buf = dev._create_buffer(slot * 8, wgpu.BufferUsage.QUERY_RESOLVE
                                     | wgpu.BufferUsage.COPY_SRC, "timestamps")
            enc.resolve_query_set(self.query_set, 0, slot, buf.gpu, 0)
        dev._queue.submit([enc.finish()])
        if slot:
            self.pending.append((dev.read_begin(buf), names, buf, spans, slot))

    async def collect(self):
        """-> rows sorted by total GPU time: kernel, calls, gpu_us (total), us_per_call,
        share (of all timed GPU time). Clears what was gathered."""
        totals = {}
        pending, self.pending = self.pending, []
        for wait, names, buf, spans, n in pending:
            data = await wait
            buf.gpu.destroy()
            stamps = struct.unpack(f"<{n}Q", data)
            for name, (a, b) in zip(names, spans):
                name, calls = name if isinstance(name, list) else (name, 1)   # span: [name, n]
                t = totals.setdefault(name, [0, 0])
                t[0] += calls
                t[1] += max(0, stamps[b] - stamps[a])
        all_ns = sum(t[1] for t in totals.values()) or 1
        rows = [{"kernel": k, "calls": c, "gpu_us": round(ns / 1e3, 1),
                 "us_per_call": round(ns / 1e3 / c, 2), "share": round(ns / all_ns, 4)}
                for k, (c, ns) in totals.items()]
        return sorted(rows, key=lambda r: -r["gpu_us"])
