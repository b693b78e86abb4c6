"""WebGPU through wgpu-py (wgpu-native: Vulkan, Metal, D3D12): the native backend.

The same WGSL and the same Device interface as the browser backend (py_engine.gpu.browser),
for CLI runs, host tests and GPU benchmarks from plain CPython. Host-only: it imports
`wgpu`, which does not exist inside Pyodide; nothing on the browser path imports this module.

wgpu-py reports validation errors as Python exceptions raised by the call that caused them;
they come out of here as ShaderError / GPUValidationError naming the shader and entry point.
Errors the driver reports outside any call (logged by wgpu-py) are collected and raised by
the next `check()`.
"""
import logging
import time

import wgpu

from py_engine.gpu.device import STORAGE_USAGE, Device
from py_engine.gpu.errors import GPUUnavailable, GPUValidationError, ShaderError
from py_engine.gpu.settings import capped_storage, storage_problem

# Same names as the browser backend; wgpu-py accepts camelCase limit names.
REQUESTED_LIMITS = (
    "maxStorageBufferBindingSize", "maxBufferSize", "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX", "maxComputeWorkgroupsPerDimension", "maxBindGroups",
    "maxUniformBufferBindingSize",
)
# wgpu-py has called the subgroup feature "subgroup" and "subgroups"; we report "subgroups".
FEATURE_ALIASES = {"shader-f16": ("shader-f16",), "subgroups": ("subgroups", "subgroup"),
                   "timestamp-query": ("timestamp-query",),
                   # wgpu-native's timestamps between dispatches of one pass (profiling only)
                   "timestamp-query-inside-passes": ("timestamp-query-inside-passes",)}
# WebGPU lets the offset alignment be at most 256, and Chrome always says 256. Binding
# offsets are checked against 256 here too, so code that passes natively passes in Chrome.
BROWSER_OFFSET_ALIGN = 256


def _hyphen(name):
    out = []
    for ch in name:
        out.append("-" + ch.lower() if ch.isupper() else ch)
    return "".join(out)


def _limit(limits, name):
    for key in (name, _hyphen(name), _hyphen(name).replace("-", "_")):
        if key in limits:
            return int(limits[key])
    raise KeyError(name)


async def create_native_device(power_preference="high-performance", force_fallback=False):
    """The native device: adapter maximum limits, plus `subgroups` / `shader-f16` /
    `timestamp-query` where the adapter offers them."""
    try:
        adapter = await wgpu.gpu.request_adapter_async(power_preference=power_preference,
                                                      force_fallback_adapter=force_fallback)
    except Exception as e:  # wgpu-native raises when no backend/adapter exists
        raise GPUUnavailable(
            f"wgpu found no GPU adapter ({e}): install a Vulkan driver (for a CPU one, "
            "`apt-get install mesa-vulkan-drivers`) or run on a machine with a GPU") from e
    if adapter is None:
        raise GPUUnavailable("wgpu found no GPU adapter: install a Vulkan driver (for a CPU "
                             "one, `apt-get install mesa-vulkan-drivers`)")
    limits = {name: _limit(adapter.limits, name) for name in REQUESTED_LIMITS}
    # MAMBAWEB_STORAGE_BINDINGS=10 asks for a Mac tab's binding tier (gpu/settings.py)
    key = "maxStorageBuffersPerShaderStage"
    limits[key] = capped_storage(limits[key])
    if storage_problem(limits[key]):
        raise GPUUnavailable(storage_problem(limits[key]))
    offered = set(adapter.features)
    features, native_names = [], []
    for ours, names in FEATURE_ALIASES.items():
        for n in names:
            if n in offered:
                features.append(ours)
                native_names.append(n)
                break
    try:
        device = await adapter.request_device_async(required_features=native_names,
                                                    required_limits=limits)
    except Exception as e:
        raise GPUUnavailable(f"the GPU adapter refused a device: {e}") from e
    ai = adapter.info
    info = {k: str(ai.get(k, "") or "") for k in ("vendor", "architecture", "device", "description")}
    info["backend"] = "native"
    info["backend_type"] = str(ai.get("backend_type", ""))
    info["adapter_type"] = str(ai.get("adapter_type", ""))
    info["is_fallback"] = info["adapter_type"].upper() == "CPU"
    info["wgpu"] = wgpu.__version__
    info["limits"] = {name: _limit(device.limits, name) for name in REQUESTED_LIMITS}
    info["limits"]["minStorageBufferOffsetAlignment"] = max(
        BROWSER_OFFSET_ALIGN, _limit(device.limits, "minStorageBufferOffsetAlignment"))
    device_features = set(device.features)
    info["features"] = [ours for ours, names in FEATURE_ALIASES.items()
                        if any(n in device_features for n in names)]
    return NativeDevice(device, info)


class NativeBuffer:
    __slots__ = ("gpu", "size", "id", "usage")
    _next_id = 0

    def __init__(self, gpubuf, size, usage):
        NativeBuffer._next_id += 1
        self.gpu, self.size, self.usage, self.id = gpubuf, size, usage, NativeBuffer._next_id


class _ErrorLog(logging.Handler):
    """wgpu-py logs errors that no call raised (uncaptured errors, device loss)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class NativeDevice(Device):
    def __init__(self, device, info):
        super().__init__(info)
        self.gpu = device
        self._queue = device.queue
        self._layouts = {}
        self._modules = {}
        self._errors = _ErrorLog()
        logging.getLogger("wgpu").addHandler(self._errors)
        self._raw = _raw_encoder_calls()
        self._work_done_api = True
        # True: finish() polls the device in this thread (wgpuDevicePoll(wait)) instead of
        # awaiting wgpu-py's poll thread: a submit + finish round trip took 100 us instead of
        # 300 us on an H100, but the event loop stalls meanwhile (fine for the CLI and
        # benchmarks, where nothing else runs on it; tools.native_engine turns it on).
        self.blocking_waits = False
        self._fence = None
        # A py_engine.gpu.native_profile.KernelProfiler: every dispatch in its own timed pass
        # (attach before recording what is to be profiled: recordings keep their encoding).
        self.profiler = None

    # -- buffers -------------------------------------------------------------------------
    def _create_buffer(self, nbytes, usage, label):
        try:
            gpubuf = self.gpu.create_buffer(size=nbytes, usage=usage, label=label or "")
        except wgpu.GPUError as e:
            raise GPUValidationError(f"creating a {nbytes}-byte buffer"
                                     f"{' for ' + label if label else ''} failed: {e}") from e
        return NativeBuffer(gpubuf, nbytes, usage)

    def _destroy_buffer(self, buf):
        buf.gpu.destroy()

    def write(self, buf, data, offset=0):
        """Write anything with the buffer protocol (bytes, memoryview, numpy, mmap) at
        `offset`; the length is padded to a multiple of 4 as WebGPU requires."""
        mv = memoryview(data).cast("B")
        if len(mv) == 0:
            return
        if len(mv) % 4:
            mv = memoryview(bytes(mv) + b"\0" * (4 - len(mv) % 4))
        try:
            self._queue.write_buffer(buf.gpu, offset, mv)
        except (wgpu.GPUError, ValueError) as e:
            raise GPUValidationError(f"writing {len(mv)} bytes at offset {offset} of a "
                                     f"{buf.size}-byte buffer failed: {e}") from e

    async def read(self, buf, offset=0, size=None) -> bytes:
        return await self.read_begin(buf, offset, size)

    def read_begin(self, buf, offset=0, size=None):
        """Queue the copy to a staging buffer now; the returned awaitable maps it and gives
        the bytes (so later submits can run while the read is pending)."""
        size = buf.size - offset if size is None else size
        padded = (size + 3) & ~3
        staging = self._staging(padded)
        try:
            enc = self.gpu.create_command_encoder()
            enc.copy_buffer_to_buffer(buf.gpu, offset, staging.gpu, 0, padded)
            self._queue.submit([enc.finish()])
        except wgpu.GPUError as e:
            self._staging_free.append(staging)
            raise GPUValidationError(f"reading {size} bytes at offset {offset}: {e}") from e
        return self._read_finish(staging, offset, size, padded)

    async def _read_finish(self, staging, offset, size, padded):
        try:
            # Always awaited through wgpu-py's poll thread: measured on an H100, polling here
            # while a map is pending cost 3-8 ms per read (two threads in wgpuDevicePoll).
            await staging.gpu.map_async(wgpu.MapMode.READ, 0, padded)
            try:
                data = bytes(staging.gpu.read_mapped(0, padded, copy=False))[:size]
            finally:
                staging.gpu.unmap()
        except wgpu.GPUError as e:
            raise GPUValidationError(f"reading {size} bytes at offset {offset}: {e}") from e
        finally:
            self._staging_free.append(staging)
        await self.check()
        return data

    # -- pipelines -----------------------------------------------------------------------
    def _forget_module(self, shader):
        self._modules.pop(shader, None)

    def _build_pipeline(self, shader, entry, source, constants):
        module = self._modules.get(shader)
        if module is None:
            if "subgroups" in self.features:
                # Naga (wgpu-native) rejects `enable subgroups;` ("not yet implemented") but
                # accepts the subgroup builtins once the device has the feature. Blank the
                # directive, keeping line numbers for error messages.
                source = source.replace("enable subgroups;", "// subgroups (device feature)")
            try:
                module = self.gpu.create_shader_module(code=source, label=f"{shader}.wgsl")
            except Exception as e:
                raise ShaderError(f"shader {shader}.wgsl entry {entry!r} failed to build:\n"
                                  f"{e}") from None
            self._modules[shader] = module
        compute = {"module": module, "entry_point": entry}
        if constants:
            compute["constants"] = dict(constants)
        try:
            pipe = self.gpu.create_compute_pipeline(layout="auto", label=f"{shader}:{entry}",
                                                    compute=compute)
        except Exception as e:
            raise ShaderError(f"shader {shader}.wgsl entry {entry!r} failed to build"
                              f"{' with constants ' + repr(dict(constants)) if constants else ''}:"
                              f"\n{e}") from None
        self._layouts[id(pipe)] = (pipe, pipe.get_bind_group_layout(0), f"{shader}:{entry}")
        return pipe

    async def check(self):
        """Raise the first GPU error reported since the last check."""
        if self._errors.messages:
            msgs, self._errors.messages = self._errors.messages, []
            raise GPUValidationError("GPU validation error: " + " | ".join(msgs))

    def _bind_group(self, pipeline, entries):
        _, layout, name = self._layouts[id(pipeline)]
        try:
            return self.gpu.create_bind_group(layout=layout, entries=[
                {"binding": i, "resource": {"buffer": buf.gpu, "offset": off, "size": size}}
                for i, (buf, off, size) in entries])
        except wgpu.GPUError as e:
            raise GPUValidationError(f"bind group for {name}: {e}") from e

    # -- submission ----------------------------------------------------------------------
    def _encode_commands(self, commands):
        # Resolve Python wrappers to what the encoder loop calls, once per Recording.
        raw = self._raw is not None and self.profiler is None
        out = []
        for c in commands:
            if c[0] == 0:
                out.append((0, c[1]._internal if raw else c[1], c[2]._internal if raw else c[2],
                            c[3], c[4], c[5]))
            else:
                out.append((1, c[1].gpu, c[2], c[3].gpu, c[4], c[5]))
        return out

    def _submit_encoded(self, encoded, count=None):
        if count is not None:          # a prefix (Recording.replay(count))
            encoded = encoded[:count]
        if self.profiler is not None:
            try:
                return self.profiler.submit(encoded)
            except wgpu.GPUError as e:
                raise GPUValidationError(f"GPU validation error in a profiled batch: {e}") from e
        t0 = time.perf_counter()
        try:
            enc = self.gpu.create_command_encoder()
            cpass = None
            last_pipe = None
            raw = self._raw
            for c in encoded:
                if c[0] == 0:
                    if cpass is None:
                        cpass = enc.begin_compute_pass()
                        last_pipe = None
                        handle = cpass._internal if raw else None
                    if raw:
                        if c[1] is not last_pipe:
                            raw.set_pipeline(handle, c[1])
                            last_pipe = c[1]
                        raw.set_bind_group(handle, 0, c[2], 0, raw.null)
                        raw.dispatch(handle, c[3], c[4], c[5])
                    else:
                        if c[1] is not last_pipe:
                            cpass.set_pipeline(c[1])
                            last_pipe = c[1]
                        cpass.set_bind_group(0, c[2])
                        cpass.dispatch_workgroups(c[3], c[4], c[5])
                else:
                    if cpass is not None:
                        cpass.end()
                        cpass = None
                    enc.copy_buffer_to_buffer(c[1], c[2], c[3], c[4], c[5])
            if cpass is not None:
                cpass.end()
            t1 = time.perf_counter()
            buffer = enc.finish()
            t2 = time.perf_counter()
            self._queue.submit([buffer])
            self._count_submit(t0, t1, t2, time.perf_counter(), len(encoded))
        except wgpu.GPUError as e:
            raise GPUValidationError(f"GPU validation error in a submitted batch: {e}") from e

    async def finish(self):
        """Wait until the GPU has run everything submitted so far."""
        poll = getattr(self.gpu, "_poll", None)   # private in wgpu-py, hence getattr
        if self.blocking_waits and poll is not None:
            try:
                poll(True)   # returns once the queue is idle
            except wgpu.GPUError as e:
                raise GPUValidationError(f"GPU error while waiting for the queue: {e}") from e
            await self.check()
            return
        if self._work_done_api:
            try:
                await self._queue.on_submitted_work_done_async()
            except TypeError:
                # wgpu-py 0.32's callback type disagrees with its bundled wgpu-native
                # ("initializer for ctype 'void(*)(WGPUQueueWorkDoneStatus, WGPUStringView,
                # ...)'"): fall back to mapping a staging buffer, which the queue also
                # orders after all earlier work.
                self._work_done_api = False
        if not self._work_done_api:
            if self._fence is None:
                self._fence = self._create_buffer(256, STORAGE_USAGE, "fence")
            await self.read(self._fence, 0, 4)   # read() ends with check()
            return
        await self.check()


class _RawCalls:
    """wgpu-native's pass-encoding C functions, called without wgpu-py's per-call error
    capture: encoding errors are recorded by wgpu-core and raised by `finish()`/`submit`,
    which still go through wgpu-py. About 3x less host time per dispatch."""
    __slots__ = ("set_pipeline", "set_bind_group", "dispatch", "null")


def _raw_encoder_calls():
    try:
        from wgpu.backends.wgpu_native._ffi import ffi, lib
        raw = _RawCalls()
        raw.set_pipeline = lib.wgpuComputePassEncoderSetPipeline
        raw.set_bind_group = lib.wgpuComputePassEncoderSetBindGroup
        raw.dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
        raw.null = ffi.NULL
        return raw
    except Exception:  # another wgpu-py layout: use its public API
        return None
