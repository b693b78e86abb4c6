"""The GPU interface every op uses, independent of backend (browser WebGPU or wgpu-py).

A backend subclass provides: _create_buffer, _destroy_buffer, write, read (async),
_build_pipeline, _bind_group, _encode_commands, _submit_encoded, check (async), finish (async).
This class adds what is the same everywhere: the buffer pool, pipeline / uniform / bind group
caches, limit checks with clear errors, and command batches.
"""
from py_engine.gpu.errors import DeviceLimitError, GPUValidationError, out_of_memory
from py_engine.gpu.pool import BufferPool
from py_engine.gpu.shaders import shader_source

STORAGE, COPY_SRC, COPY_DST, UNIFORM, MAP_READ = 0x80, 0x04, 0x08, 0x40, 0x01
STORAGE_USAGE = STORAGE | COPY_SRC | COPY_DST


class Device:
    def __init__(self, info):
        self.info = info
        self.limits = info["limits"]
        self.features = set(info["features"])
        self.align = self.limits.get("minStorageBufferOffsetAlignment", 256)
        self.pool = BufferPool(lambda n: self.buffer(n, label="pool"))
        self._pipelines = {}
        self._uniforms = {}
        self._bind_groups = {}
        self._staging_free = []
        self.buffers_created = 0
        # Every GPU buffer this device holds (pool, uniforms, staging, private pools), by
        # count and bytes: created minus destroyed. A steady workload must leave both flat.
        self.live_buffers = 0
        self.live_bytes = 0
        self.lost = None             # why the device was lost ({"reason", "message"}), else None
        self.fail_allocations_over = None   # test hook: bytes of new buffers before "out of memory"
        self.dispatches_submitted = 0
        self.submits = 0
        self._submit_times = dict.fromkeys(self._SUBMIT_KEYS, 0)   # see take_submit_times
        # test hook: bind at most this many bytes per storage binding (tests split a tiny
        # model's embedding into row blocks as a 128 MiB-limit GPU splits a real one)
        self.binding_cap = None

    @property
    def max_binding(self) -> int:
        """The storage-binding limit in force: maxStorageBufferBindingSize, or binding_cap."""
        lim = self.limits["maxStorageBufferBindingSize"]
        return lim if self.binding_cap is None else min(lim, int(self.binding_cap))

    # -- buffers -------------------------------------------------------------------------
    def buffer(self, nbytes, usage=STORAGE_USAGE, label=None):
        nbytes = max(4, (int(nbytes) + 3) & ~3)
        if nbytes > self.limits["maxBufferSize"]:
            raise DeviceLimitError(
                f"a {nbytes / 2**20:.1f} MiB buffer{' for ' + label if label else ''} exceeds this "
                f"GPU's maxBufferSize of {self.limits['maxBufferSize'] / 2**20:.1f} MiB: use a "
                "smaller model, a 16-bit/int8 weight dtype, or a GPU with more memory")
        if self.fail_allocations_over is not None:
            if nbytes > self.fail_allocations_over:
                self.fail_allocations_over = None
                purpose = f" for {label}" if label and label != "pool" else ""
                raise out_of_memory(f"allocating a {nbytes / 2**20:.1f} MiB buffer{purpose}")
            self.fail_allocations_over -= nbytes
        self.buffers_created += 1
        return self._counted(self._create_buffer(nbytes, usage, label))

    def _counted(self, buf):
        self.live_buffers += 1
        self.live_bytes += buf.size
        return buf

    def _staging(self, nbytes):
        """A MAP_READ staging buffer of at least nbytes (power-of-two sizes, reused: readers
        put it back in _staging_free when done)."""
        for i, s in enumerate(self._staging_free):
            if s.size >= nbytes:
                return self._staging_free.pop(i)
        cls = 256
        while cls < nbytes:
            cls *= 2
        return self._counted(self._create_buffer(cls, MAP_READ | COPY_DST, "staging"))

    def destroy(self, buf):
        """Destroy one buffer (the bind groups that name it go with it)."""
        self.destroy_many([buf])

    def destroy_many(self, bufs):
        """Destroy buffers and forget every cached bind group naming one of them (a cached
        group keeps its buffers alive, and a later buffer could never reuse its key)."""
        bufs = [b for b in bufs if b is not None]
        self.forget_bindings(bufs)
        for b in bufs:
            if self.lost is None:
                self._destroy_buffer(b)
            self.live_buffers -= 1
            self.live_bytes -= b.size

    def empty_pool(self):
        """Destroy every free buffer of the current pool, giving its memory back to the GPU;
        buffers in use stay. After an out-of-memory (a pooled buffer may be one the GPU never
        allocated) and as a debug op (freed buffers are otherwise reused, so a test that counts
        live buffers starts from an empty pool). Returns {buffers, bytes} destroyed."""
        free = self.pool.take_free()
        self.destroy_many(free)
        return {"buffers": len(free), "bytes": sum(b.size for b in free)}

    # -- out-of-memory around a batch of allocations ------------------------------------
    def open_allocation_scope(self):
        """Start collecting out-of-memory errors of the allocations that follow (a browser
        reports them asynchronously). Backends that raise at allocation time need nothing."""

    async def close_allocation_scope(self, what: str):
        """What went wrong since open_allocation_scope(), as an exception to raise, else None:
        GPUOutOfMemory ("the GPU ran out of memory <what>: ...") when an allocation failed,
        GPUValidationError for another error. Scopes nest; every open needs one close."""
        return None

    def uniform(self, data: bytes):
        """A uniform buffer holding `data`, shared by every caller that asks for the same bytes.

        Op parameters (sizes, strides, eps) repeat every step, so caching by content means a
        steady decode or training loop creates no new uniform buffers after its first step.
        """
        buf = self._uniforms.get(data)
        if buf is None:
            buf = self.buffer(max(16, len(data)), UNIFORM | COPY_DST, "uniform")
            self.write(buf, data)
            self._uniforms[data] = buf
        return buf

    # -- pipelines -----------------------------------------------------------------------
    def pipeline(self, shader: str, entry: str, constants=None):
        """The compute pipeline for (shader file, entry point, override constants), built once."""
        key = (shader, entry, tuple(sorted(constants.items())) if constants else ())
        pipe = self._pipelines.get(key)
        if pipe is None:
            source = shader_source(shader)
            if "enable subgroups;" in source and "subgroups" not in self.features:
                raise DeviceLimitError(f"shader {shader}.wgsl needs the 'subgroups' feature, "
                                       "which this GPU does not offer")
            pipe = self._build_pipeline(shader, entry, source, constants)
            self._pipelines[key] = pipe
        return pipe

    def forget_shader(self, shader: str):
        """Drop every pipeline built from shaders/<shader>.wgsl and the backend's compiled
        module of it, so the next pipeline() compiles shader_source(shader) again (tools that
        time a kernel with parts edited out)."""
        for key in [k for k in self._pipelines if k[0] == shader]:
            del self._pipelines[key]
        self._forget_module(shader)

    def _forget_module(self, shader: str):
        """Backends that keep compiled shader modules apart from pipelines drop `shader`'s."""

    def bind(self, pipeline, resources):
        """Bind group for `pipeline` with bindings 0..n-1 = `resources`.

        A resource is a Buffer (whole buffer) or (Buffer, byte_offset, byte_size); None skips
        a binding number. Cached, so a fixed graph replays the same bind groups; the cache is
        asked first (a prefill records ~25 dispatches a layer, nearly all of them hits), the
        checks below run only for a group not made before.
        """
        key = (id(pipeline), tuple(None if r is None else (r[0].id, r[1], r[2])
                                   if type(r) is tuple else (r.id, 0, r.size) for r in resources))
        group = self._bind_groups.get(key)
        if group is not None:
            return group
        entries = []
        for i, r in enumerate(resources):
            if r is None:
                continue
            buf, off, size = (r, 0, r.size) if not isinstance(r, tuple) else r
            if off % self.align:
                raise GPUValidationError(
                    f"binding {i}: offset {off} is not a multiple of {self.align} bytes "
                    "(WebGPU would silently invalidate the whole command encoder)")
            if size > self.max_binding:
                raise DeviceLimitError(
                    f"binding {i}: {size / 2**20:.1f} MiB ({size} bytes) exceeds this GPU's "
                    f"maxStorageBufferBindingSize ({self.max_binding / 2**20:.1f} MiB, "
                    f"{self.max_binding} bytes); "
                    "the tensor must be split into smaller bindings")
            if off + size > buf.size:
                raise GPUValidationError(f"binding {i}: range {off}+{size} is past the end of "
                                         f"a {buf.size}-byte buffer")
            entries.append((i, (buf, off, size)))
        group = self._bind_groups[key] = self._bind_group(pipeline, entries)
        return group

    def forget_buffer_bindings(self, buf):
        """Drop cached bind groups that reference `buf` (call before destroying it)."""
        self.forget_bindings([buf])

    def forget_bindings(self, bufs):
        """Drop cached bind groups naming any of `bufs` (one pass over the cache)."""
        ids = {b.id for b in bufs if b is not None}
        if not ids:
            return
        dead = [k for k in self._bind_groups if any(e is not None and e[0] in ids for e in k[1])]
        for k in dead:
            del self._bind_groups[k]

    def release_tensors(self, tensors):
        """Give long-lived tensors (a model's weights, a decode state) back to the pool and
        forget the bind groups naming their buffers: the pool hands those buffers out again
        in another order, so groups cached for this owner would never be hit again and the
        cache would grow with every load/unload cycle."""
        from py_engine.gpu.row_chunks import flat
        tensors = flat(tensors)          # a weight held as row blocks: each block
        self.forget_bindings([t.buffer for t in tensors if t.pooled and t.buffer is not None])
        for t in tensors:
            t.release()

    def private_pool(self):
        """Context manager: tensors made inside draw from a fresh pool that never returns
        buffers to the shared one, so a Recording made inside keeps its buffers to itself.
        Its owner calls `release_pool(pool)` when the recording is dropped."""
        device = self

        class _Private:
            def __enter__(self_inner):
                self_inner.saved = device.pool
                self_inner.pool = BufferPool(device.pool._create, track=True)
                device.pool = self_inner.pool
                return self_inner.pool

            def __exit__(self_inner, *exc):
                device.pool = self_inner.saved
        return _Private()

    def release_pool(self, pool):
        """Destroy every buffer a private pool created (in use by a dropped recording or
        free) and the bind groups naming them."""
        self.destroy_many(pool.drain())

    # -- batches -------------------------------------------------------------------------
    def batch(self, stream=False):
        """A command batch; stream=True asks for one submitted in chunks as it is recorded
        (py_engine/gpu/batch.py), which a real GPU gets: on a software adapter the "GPU" is the
        same CPU cores the recording runs on, and streaming measured slower there (Dawn on
        SwiftShader, this 2-core machine: d256x4 prefills 15-35% slower). `stream_batches`
        True/False (tests), else MAMBAWEB_BATCH_STREAM=1/0 (bench variants), decide instead."""
        from py_engine.gpu.batch import Batch
        from py_engine.gpu.settings import choose
        if stream:
            stream = choose(self, "stream_batches", "MAMBAWEB_BATCH_STREAM", "1", "0",
                            lambda: not self.info.get("is_fallback"))
        return Batch(self, bool(stream))

    def submit_commands(self, commands, dispatches, encoded=None, count=None):
        """One submit of `commands` (their backend form `encoded` when already made), or of
        the first `count` of them."""
        self.submits += 1
        self.dispatches_submitted += dispatches
        self._submit_encoded(encoded if encoded is not None else self._encode_commands(commands),
                             count)

    # -- where the host's time goes when it submits (the bench's decode split) ------------
    _SUBMIT_KEYS = ("encode_ms", "finish_ms", "submit_ms", "batches", "commands")

    def _count_submit(self, t0, t1, t2, t3, commands):
        """Add one batch's host times (perf_counter seconds: start, commands encoded,
        finished, submitted) to what take_submit_times returns."""
        t = self._submit_times
        t["encode_ms"] += 1000 * (t1 - t0)
        t["finish_ms"] += 1000 * (t2 - t1)
        t["submit_ms"] += 1000 * (t3 - t2)
        t["batches"] += 1
        t["commands"] += commands

    def take_submit_times(self):
        """The host time spent submitting since the last call: encode_ms (the loop of
        setPipeline / setBindGroup / dispatch / copy calls), finish_ms (the backend validates
        the commands), submit_ms (it hands them to the driver), batches, commands; zeroed."""
        t, self._submit_times = self._submit_times, dict.fromkeys(self._SUBMIT_KEYS, 0)
        return t

    def stats(self):
        return {"buffers_created": self.buffers_created, "live_buffers": self.live_buffers,
                "live_bytes": self.live_bytes, "pipelines": len(self._pipelines),
                "bind_groups": len(self._bind_groups), "uniforms": len(self._uniforms),
                "submits": self.submits, "dispatches": self.dispatches_submitted,
                "pool": self.pool.stats()}
