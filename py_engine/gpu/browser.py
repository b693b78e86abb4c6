"""WebGPU through Pyodide's JS bridge (`js.navigator.gpu`): the browser backend.

Everything here is small objects and handles; bytes move JS -> GPU (writeBuffer) and
GPU -> JS (mapAsync) without crossing into Python except for small readbacks.
"""
import json
import js
from pyodide.ffi import JsException, to_js

from py_engine.gpu.device import Device
from py_engine.gpu.errors import (GPUDeviceLost, GPUError, GPUUnavailable, ShaderError,
                                  GPUValidationError, out_of_memory)
from py_engine.gpu.settings import storage_problem
from py_engine.gpu.shaders import shader_location

# Limits we ask for at the adapter's maximum: the defaults (128 MiB bindings, 8 storage
# buffers per stage) are too small for real models.
REQUESTED_LIMITS = (
    "maxStorageBufferBindingSize", "maxBufferSize", "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX", "maxComputeWorkgroupsPerDimension", "maxBindGroups",
    "maxUniformBufferBindingSize",
)
REPORTED_LIMITS = REQUESTED_LIMITS + ("minStorageBufferOffsetAlignment",)
# gpu_bridge.mjs marks an unscoped GPUOutOfMemoryError with this prefix in takeGpuErrors().
OOM_PREFIX = "out-of-memory: "
OPTIONAL_FEATURES = ("shader-f16", "subgroups", "timestamp-query")



try:  # Pyodide >= 0.28 maps JS null to `jsnull`, not None
    from pyodide.ffi import jsnull as _JSNULL
except ImportError:  # pragma: no cover
    _JSNULL = None


def _nullish(x) -> bool:
    return x is None or x is _JSNULL or x == js.undefined


def _js(obj):
    return to_js(obj, dict_converter=js.Object.fromEntries)


async def create_device() -> "BrowserDevice":
    gpu = getattr(js.navigator, "gpu", None)
    if _nullish(gpu):
        secure = bool(getattr(js.self, "isSecureContext", True))
        if not secure:
            raise GPUUnavailable(
                "this page is not a secure origin, so WebGPU is hidden: open it as "
                "http://localhost:PORT or http://127.0.0.1:PORT")
        raise GPUUnavailable(
            "this browser exposes no WebGPU (navigator.gpu is missing): use Chrome or Edge "
            "113+; on Linux start Chrome with --enable-unsafe-webgpu")
    adapter = await gpu.requestAdapter(_js({"powerPreference": "high-performance"}))
    if _nullish(adapter):
        raise GPUUnavailable(
            "WebGPU is present but no GPU adapter was found: enable hardware acceleration "
            "(chrome://settings/system), update the GPU driver, or start Chrome with "
            "--enable-unsafe-webgpu --enable-features=Vulkan")
    limits = {name: int(getattr(adapter.limits, name)) for name in REQUESTED_LIMITS}
    if storage_problem(limits["maxStorageBuffersPerShaderStage"]):
        raise GPUUnavailable(storage_problem(limits["maxStorageBuffersPerShaderStage"]))
    features = [f for f in OPTIONAL_FEATURES if adapter.features.has(f)]
    try:
        device = await adapter.requestDevice(_js({"requiredLimits": limits,
                                                  "requiredFeatures": features}))
    except JsException as e:
        raise GPUUnavailable(f"the GPU adapter refused a device: {e}") from e
    js.mwGpu.watchDevice(device)
    info = {}
    try:
        ai = adapter.info
        info = {k: str(getattr(ai, k, "") or "") for k in ("vendor", "architecture", "device", "description")}
    except Exception:  # older browsers have no adapter.info
        pass
    info["is_fallback"] = bool(getattr(adapter, "isFallbackAdapter", False)) or \
        bool(getattr(adapter.info, "isFallbackAdapter", False) if hasattr(adapter, "info") else False)
    info["limits"] = {name: int(getattr(device.limits, name)) for name in REPORTED_LIMITS}
    info["features"] = [f for f in OPTIONAL_FEATURES if device.features.has(f)]
    return BrowserDevice(device, info)


class BrowserBuffer:
    __slots__ = ("js", "size", "id", "usage")
    _next_id = 0

    def __init__(self, jsbuf, size, usage):
        BrowserBuffer._next_id += 1
        self.js, self.size, self.usage, self.id = jsbuf, size, usage, BrowserBuffer._next_id


class BrowserDevice(Device):
    def __init__(self, device, info):
        super().__init__(info)
        self.js = device
        self._queue = device.queue
        self._pending_checks = []   # (what, promise-of-error) from lazily built pipelines

    # -- buffers -------------------------------------------------------------------------
    def _create_buffer(self, nbytes, usage, label):
        jsbuf = self.js.createBuffer(_js({"size": nbytes, "usage": usage, "label": label or ""}))
        return BrowserBuffer(jsbuf, nbytes, usage)

    def _destroy_buffer(self, buf):
        buf.js.destroy()

    def write(self, buf, data, offset=0):
        """Write bytes-like (Python) or an ArrayBuffer/TypedArray (JS) at `offset`."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            mv = memoryview(data).cast("B")
            if len(mv) % 4:
                mv = memoryview(bytes(mv) + b"\0" * (4 - len(mv) % 4))
            data = to_js(mv)
        self._queue.writeBuffer(buf.js, offset, data)

    async def read(self, buf, offset=0, size=None) -> bytes:
        return await self.read_begin(buf, offset, size)

    def read_begin(self, buf, offset=0, size=None):
        """Start the read now (the JS helper submits the staging copy before its first await);
        the returned awaitable gives the bytes, so later submits can run meanwhile."""
        size = buf.size - offset if size is None else size
        padded = (size + 3) & ~3
        staging = self._staging(padded)
        try:
            promise = js.mwGpu.readBuffer(self.js, buf.js, offset, padded, staging.js)
        except Exception:
            self._staging_free.append(staging)
            raise
        return self._read_finish(promise, staging, size)

    async def _read_finish(self, promise, staging, size):
        try:
            arr = await promise
            data = arr.to_bytes()[:size]
        except JsException as e:
            self._raise_if_lost()
            raise
        finally:
            self._staging_free.append(staging)
        await self.check()
        return data

    # -- pipelines -----------------------------------------------------------------------
    def _build_pipeline(self, shader, entry, source, constants):
        self.js.pushErrorScope("validation")
        module = self.js.createShaderModule(_js({"code": source, "label": f"{shader}.wgsl"}))
        desc = {"layout": "auto", "label": f"{shader}:{entry}",
                "compute": {"module": module, "entryPoint": entry}}
        if constants:
            desc["compute"]["constants"] = dict(constants)
        pipe = self.js.createComputePipeline(_js(desc))
        self._pending_checks.append((shader, entry, self.js.popErrorScope(),
                                     module.getCompilationInfo()))
        return pipe

    def _raise_if_lost(self):
        # self.lost is set by py_engine.rpc.reinit when the Worker hears device.lost
        if self.lost is not None:
            raise GPUDeviceLost(
                f"the GPU device was lost ({self.lost.get('reason') or 'unknown'}"
                f"{': ' + self.lost['message'] if self.lost.get('message') else ''}); the engine "
                "is restarting on a new device")

    async def check(self):
        """Raise the first GPU error since the last check, naming the shader and entry."""
        self._raise_if_lost()
        checks, self._pending_checks = self._pending_checks, []
        for shader, entry, scope, info in checks:
            err = await scope
            if not _nullish(err):
                msgs = []
                cinfo = await info
                for m in cinfo.messages:
                    if m.type == "error":
                        msgs.append(f"{shader_location(shader, m.lineNum)}:{m.linePos}: {m.message}")
                detail = "\n".join(msgs) or str(err.message)
                raise ShaderError(f"shader {shader}.wgsl entry {entry!r} failed to build:\n{detail}")
        errors = [str(e) for e in js.mwGpu.takeGpuErrors()]
        oom = [e[len(OOM_PREFIX):] for e in errors if e.startswith(OOM_PREFIX)]
        if oom:
            # the validation errors beside it are its echoes (writes to the buffer never made)
            raise out_of_memory("allocating a buffer") from GPUError(" | ".join(oom))
        if errors:
            raise GPUValidationError("GPU validation error: " + " | ".join(errors))

    # -- out-of-memory around a batch of allocations ------------------------------------
    # WebGPU's createBuffer never throws for lack of memory: the buffer comes back invalid and
    # an "out-of-memory" GPUError arrives later. An error scope around a whole load collects
    # it with one await at the end (not one per buffer). The outer "validation" scope takes
    # the errors the invalid buffer then causes (writes into it), so they are not reported
    # later as an unrelated "validation error".
    def open_allocation_scope(self):
        self.js.pushErrorScope("validation")
        self.js.pushErrorScope("out-of-memory")

    async def close_allocation_scope(self, what):
        popped = [self.js.popErrorScope(), self.js.popErrorScope()]   # both now: stack order
        errors = []
        for p in popped:
            try:
                errors.append(await p)
            except JsException:     # a lost device: _raise_if_lost / check() say so
                errors.append(None)
        self._raise_if_lost()
        oom, invalid = errors
        if not _nullish(oom):
            problem = out_of_memory(what)
            problem.__cause__ = GPUError(str(oom.message))    # the browser's words, in Details
            return problem
        if not _nullish(invalid):
            return GPUValidationError(f"GPU validation error {what}: {invalid.message}")
        return None

    def _bind_group(self, pipeline, entries):
        js_entries = []
        for i, (buf, off, size) in entries:
            js_entries.append({"binding": i, "resource": {"buffer": buf.js, "offset": off, "size": size}})
        return self.js.createBindGroup(_js({"layout": pipeline.getBindGroupLayout(0),
                                            "entries": js_entries}))

    # -- submission ----------------------------------------------------------------------
    def _encode_commands(self, commands):
        # Buffer objects become their JS handles; the rest (pipelines, bind groups) already are.
        out = [c if c[0] == 0 else (1, c[1].js, c[2], c[3].js, c[4], c[5]) for c in commands]
        return to_js(out)

    def _submit_encoded(self, encoded, count=None):
        # count: the first `count` commands only (Recording.replay(count)); the JS array stays
        js.mwGpu.encodeAndSubmit(self.js, encoded, count if count is not None else -1)

    def take_submit_times(self):
        # counted by the bridge (web/js/gpu_bridge.mjs) as it encodes, in the page's clock
        return json.loads(str(js.mwGpu.takeSubmitTimes()))

    async def finish(self):
        await self._queue.onSubmittedWorkDone()
        await self.check()
