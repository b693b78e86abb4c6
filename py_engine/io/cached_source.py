"""A byte source whose weight files pass through the browser's cache of fetched weights
(web/js/weight_cache.mjs, in the Worker: the origin-private file system, OPFS).

  CachedSource(inner)       wraps an HttpSource or a HubSource (py_engine/io/byte_sources.py,
                            hub.py); config/tokenizer/index files still come from `inner`
  await source.finish(ok)   closes the cache entries; returns what came from where:
                            {hit_bytes, fetched_bytes, stored_bytes, discarded: [sentence],
                             notice: sentence or None}
  available()               whether this runtime has the cache (the tab's Worker does; the
                            Dawn harness and the native backend do not)

Each weight file (*.safetensors, *.bin) is one entry, named by its URL (which holds the Hub
revision) and valid for the ETag (or Last-Modified) and size a HEAD request reports; it stores
the byte ranges the loader read, each with a CRC-32, so a second load of the same file reads
them from OPFS with no range request, and a truncated or damaged entry is found and fetched
again. Bytes never enter Python except the small reads (headers) the loader asks for: tensor
ranges go OPFS or fetch -> writeBuffer inside JS. A full browser storage (quota) makes the file
stream uncached, and `notice` says so once.
"""
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def available():
    try:
        import js
    except ImportError:
        return False
    return hasattr(js, "mwCache")


def is_weight_file(name):
    return name.endswith(WEIGHT_SUFFIXES)


class CachedSource:
    def __init__(self, inner):
        self.inner = inner
        self.entries = {}        # weight file name -> the JS cache handle

    # -- naming and small files: the inner source's ----------------------------------------
    def __getattr__(self, attr):          # label, endpoint, files, ... of the inner source
        return getattr(self.inner, attr)

    def where(self, name):
        return self.inner.where(name)

    def error(self, name, why):
        return self.inner.error(name, why)

    async def exists(self, name):
        return await self.inner.exists(name)

    async def _entry(self, name):
        if name not in self.entries:
            import js
            self.entries[name] = await js.mwCache.open(self.inner.where(name))
        return self.entries[name]

    # -- weight files through the cache ----------------------------------------------------
    async def size(self, name):
        if is_weight_file(name):
            size = int((await self._entry(name)).size)
            if size >= 0:
                return size
        return await self.inner.size(name)

    async def read(self, name, start=None, end=None):
        if not is_weight_file(name) or start is None:
            return await self.inner.read(name, start, end)
        if end <= start:
            return b""
        import js
        return (await js.mwCache.read(await self._entry(name), start, end)).to_bytes()

    async def read_to_buffers(self, device, name, start, end, targets):
        if not is_weight_file(name):
            return await self.inner.read_to_buffers(device, name, start, end, targets)
        import js
        from pyodide.ffi import to_js
        js_targets = [[buf.js, off, a, b] for buf, off, a, b in targets]
        await js.mwCache.toBuffers(device.js, await self._entry(name), start, end,
                                   to_js(js_targets))

    async def finish(self, ok=True):
        """Close every entry (keeping what was stored, whether the load worked or not: each
        stored range is checksummed on its own) and say what came from where."""
        if not self.entries:
            return {"hit_bytes": 0, "fetched_bytes": 0, "stored_bytes": 0, "discarded": [],
                    "notice": None}
        import js
        from pyodide.ffi import to_js
        handles, self.entries = list(self.entries.values()), {}
        out = await js.mwCache.finish(to_js(handles), bool(ok))
        return out.to_py()
