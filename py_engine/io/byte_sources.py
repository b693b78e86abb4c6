"""Where checkpoint bytes come from: the loader (py_engine.io.hf_loader) asks a byte source
for small reads (config, index, safetensors headers) and for byte ranges written straight
into GPU buffers.

  HttpSource   the browser: HTTP Range requests from the Worker; tensor bytes go
               fetch -> ArrayBuffer -> writeBuffer in JS (mwGpu.fetchRangeToBuffers) and
               never enter Python. Imports `js`/`pyodide` only when used.
  LocalSource  native (CLI, host tests, benchmarks): files in a local folder, each range
               read once and handed to `device.write` piece by piece.

A source offers: where(name), error(name, why), async exists(name), async size(name),
async read(name, start=None, end=None) -> bytes, and
async read_to_buffers(device, name, start, end, targets) with targets
[(Buffer, buffer_offset, rel_start, rel_end)] relative to `start`.
"""
import os


class HttpSource:
    def __init__(self, base_url, files=None):
        """files: the folder's listing when the server gave one (/api/models): `exists` then
        answers from it, so probing for optional files (an index) costs no 404 request."""
        self.base = base_url
        self.files = set(files) if files else None

    def where(self, name):
        return self.base + name

    def error(self, name, why):
        from py_engine.io.http import HTTPFileError
        return HTTPFileError(f"{self.base + name}: {why}")

    async def exists(self, name):
        if self.files is not None:
            return name in self.files
        from py_engine.io.http import exists
        return await exists(self.base + name)

    async def size(self, name):
        from py_engine.io.http import file_size
        return await file_size(self.base + name)

    async def read(self, name, start=None, end=None):
        from py_engine.io.http import fetch_bytes
        return await fetch_bytes(self.base + name, start, end)

    async def read_to_buffers(self, device, name, start, end, targets):
        import js
        from pyodide.ffi import to_js
        js_targets = [[buf.js, off, a, b] for buf, off, a, b in targets]
        await js.mwGpu.fetchRangeToBuffers(device.js, self.base + name, start, end,
                                           to_js(js_targets))


class LocalFileError(IOError):
    pass


class LocalSource:
    def __init__(self, folder):
        self.folder = os.fspath(folder)

    def where(self, name):
        return os.path.join(self.folder, name) if name else self.folder + os.sep

    def error(self, name, why):
        return LocalFileError(f"{self.where(name)}: {why}")

    def _path(self, name):
        path = os.path.join(self.folder, name)
        if not os.path.isfile(path):
            raise self.error(name, "not found")
        return path

    async def exists(self, name):
        return os.path.isfile(os.path.join(self.folder, name))

    async def size(self, name):
        return os.path.getsize(self._path(name))

    async def read(self, name, start=None, end=None):
        with open(self._path(name), "rb") as fh:
            if start is None:
                return fh.read()
            fh.seek(start)
            return fh.read(end - start)

    async def read_to_buffers(self, device, name, start, end, targets):
        with open(self._path(name), "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        if len(data) != end - start:
            raise self.error(name, f"bytes {start}-{end - 1}: got {len(data)} bytes instead of "
                             f"{end - start} (file changed or truncated?)")
        mv = memoryview(data)
        for buf, off, a, b in targets:
            device.write(buf, mv[a:b], off)


class DroppedFileSource:
    """The browser, from Files the user picked or dropped (never uploaded): the Worker keeps
    them in the convert page's registry (web/js/worker.mjs, convertPutFiles) and Python names
    them by id. `files` maps a relative path ("config.json", "model.safetensors") to that id.
    Small reads come back to Python; tensor ranges go File.slice -> writeBuffer in JS."""

    def __init__(self, files, label="dropped files"):
        self.files = dict(files)
        self.label = label

    def where(self, name):
        return f"{self.label}/{name}"

    def error(self, name, why):
        return LocalFileError(f"{self.where(name)}: {why}")

    def _id(self, name):
        if name not in self.files:
            raise self.error(name, "not among the chosen files (choose the whole model folder: "
                                   "config.json and its .safetensors files)")
        return self.files[name]

    async def exists(self, name):
        return name in self.files

    async def size(self, name):
        import js
        return int(js.mwConvert.fileSize(self._id(name)))

    async def read(self, name, start=None, end=None):
        import js
        fid = self._id(name)
        if start is None:
            start, end = 0, int(js.mwConvert.fileSize(fid))
        return (await js.mwConvert.readSlice(fid, start, end)).to_bytes()

    async def read_to_buffers(self, device, name, start, end, targets):
        import js
        from pyodide.ffi import to_js
        js_targets = [[buf.js, off, a, b] for buf, off, a, b in targets]
        await js.mwGpu.fileRangeToBuffers(device.js, self._id(name), start, end, to_js(js_targets))
