"""The checksummed autosave: generations of a training state in the browser's storage (OPFS),
a manifest that names them with their CRC-32, write new -> verify -> then switch.

Layout under one folder (`mambaweb-pretrain/`):
  info.json              the manifest (what the page's "resume" banner reads), JSON:
                           {..., "autosave": 2,
                            "state":    {"file": "state-b.safetensors", "bytes", "crc32", "step"},
                            "previous": {"file": "state-a.safetensors", ...} | null,
                            "tokens":   {"file": "tokens.bin", "bytes", "crc32"}}
  state-{a,b,c}.safetensors   the state files (py_engine/train/checkpoint.py's format)
  tokens.bin             the corpus ids (u32), written once per run

A save writes the slot neither the current nor the previous generation uses, reads it back
and checks its size and CRC-32 against what the writer computed, and only then rewrites the
manifest (the browser swaps a file in whole on close, so the manifest is either the old one
or the new one); the generation that fell out of the manifest is deleted last. A crash at any
point leaves a manifest naming files that verify. A load checks the current generation and,
when it is damaged (a bit flipped, a file truncated), names it, sets it aside and uses the
previous one.

The storage is a backend with five coroutines (the browser's in session.py, a dict in tests):
  write_parts(parts, path) -> (bytes, crc32)   a checkpoint.py parts list -> a file
  write_bytes(path, data)                       a small file, replaced whole
  checksum(path) -> (bytes, crc32) | None       of the file as stored now (None: missing)
  read_text(path) -> str | None
  remove(path)
Pure stdlib.
"""
import json

VERSION = 2
SLOTS = ("state-a.safetensors", "state-b.safetensors", "state-c.safetensors")
MANIFEST = "info.json"
TOKENS = "tokens.bin"
LEGACY_STATE = "state.safetensors"      # version-1 autosaves: one file, no checksum


class AutosaveDamaged(ValueError):
    """No generation of the autosave verifies (each is named in the message)."""


def _hex(crc):
    return f"0x{int(crc) & 0xFFFFFFFF:08x}"


def damage(entry, found, where):
    """Why `entry` ({"file", "bytes", "crc32", ...}) does not verify, as one clause naming
    it, or None when it does. found: (bytes, crc32) of the stored file, or None (missing)."""
    name = f"{where}/{entry['file']}"
    if found is None:
        return f"{name} is missing"
    size, crc = found
    if size != entry["bytes"]:
        return (f"{name} is {size:,} bytes, the manifest says {entry['bytes']:,} "
                f"({'truncated' if size < entry['bytes'] else 'bytes appended'})")
    if (crc & 0xFFFFFFFF) != (entry["crc32"] & 0xFFFFFFFF):
        return (f"{name} has CRC-32 {_hex(crc)}, the manifest says {_hex(entry['crc32'])} "
                "(its bytes changed after it was written)")
    return None


class AutosaveStore:
    def __init__(self, backend, folder):
        self.backend, self.folder = backend, folder

    def _path(self, name):
        return f"{self.folder}/{name}"

    async def manifest(self):
        """The manifest as stored, or None when there is none. A manifest that is not JSON
        is refused by name (ValueError)."""
        text = await self.backend.read_text(self._path(MANIFEST))
        if text is None:
            return None
        try:
            m = json.loads(text)
            if not isinstance(m, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise AutosaveDamaged(f"{self._path(MANIFEST)} is damaged ({e}): discard the saved "
                                  "run and start a new one") from None
        return m

    async def begin(self, tokens: bytes, crc32: int):
        """A new run: drop the old manifest (the old run is gone from then on) and write the
        corpus ids once."""
        await self.backend.remove(self._path(MANIFEST))
        await self.backend.write_bytes(self._path(TOKENS), tokens)
        self.tokens = {"file": TOKENS, "bytes": len(tokens), "crc32": crc32}
        why = damage(self.tokens, await self.backend.checksum(self._path(TOKENS)), self.folder)
        if why:
            raise ValueError(f"the corpus ids did not verify after writing: {why}")

    async def save(self, parts, info, step):
        """Write a new generation from `parts`, verify it, then switch the manifest to it
        (info: the fields the page shows). Returns the new manifest. On a failed
        verification (ValueError) the manifest, and so the run saved before, is unchanged."""
        old = await self.manifest() or {}
        cur, prev = old.get("state"), old.get("previous")
        used = {e["file"] for e in (cur, prev) if e}
        slot = next(s for s in SLOTS if s not in used)
        path = self._path(slot)
        size, crc = await self.backend.write_parts(parts, path)
        entry = {"file": slot, "bytes": int(size), "crc32": int(crc), "step": int(step)}
        why = damage(entry, await self.backend.checksum(path), self.folder)
        if why:
            await self.backend.remove(path)
            kept = f" the autosave of step {cur['step']} is kept" if cur else ""
            raise ValueError(f"the new autosave did not verify after writing: {why};{kept}")
        tokens = getattr(self, "tokens", None) or old.get("tokens")
        if tokens is None:          # the first save after begin() (another store object)
            found = await self.backend.checksum(self._path(TOKENS))
            tokens = found and {"file": TOKENS, "bytes": found[0], "crc32": found[1]}
        manifest = dict(info, autosave=VERSION, state=entry, previous=cur, tokens=tokens)
        await self.backend.write_bytes(self._path(MANIFEST), json.dumps(manifest).encode())
        # the generation that fell out of the manifest (and a version-1 file) go last
        for name in [s for s in SLOTS if s not in (slot, cur and cur["file"])] + [LEGACY_STATE]:
            await self.backend.remove(self._path(name))
        return manifest

    async def load(self):
        """(state file path, manifest entry, tokens path, warnings) of the newest generation
        that verifies. A damaged current generation is named in a warning, dropped from the
        manifest, and the previous one is used; none left: AutosaveDamaged naming each."""
        m = await self.manifest()
        if m is None:
            return None
        if "state" not in m:                      # version 1: no checksums to check
            return self._path(LEGACY_STATE), {"step": m.get("step")}, self._path(TOKENS), []
        tok = m.get("tokens")
        if tok:
            why = damage(tok, await self.backend.checksum(self._path(tok["file"])), self.folder)
            if why:
                raise AutosaveDamaged(f"the saved run cannot be resumed: its corpus {why}. "
                                      "Discard it and start a new run")
        problems, warnings = [], []
        for which in ("state", "previous"):
            entry = m.get(which)
            if not entry:
                continue
            why = damage(entry, await self.backend.checksum(self._path(entry["file"])),
                         self.folder)
            if why is None:
                if problems:
                    warnings.append(f"the autosave of step {m['state']['step']} was refused: "
                                    f"{problems[0]}; resuming from the previous autosave "
                                    f"(step {entry['step']}) instead")
                    # the damaged generation leaves the manifest; the good one stays current
                    fixed = dict(m, state=entry, previous=None, step=entry["step"])
                    await self.backend.write_bytes(self._path(MANIFEST),
                                                   json.dumps(fixed).encode())
                return self._path(entry["file"]), entry, self._path(TOKENS), warnings
            problems.append(why)
        raise AutosaveDamaged("the saved run cannot be resumed: " + "; ".join(problems) +
                              ". Discard it and start a new run (or load a downloaded "
                              "training state)")


class BrowserBackend:
    """The Worker's OPFS helpers (web/js/worker.mjs `mwTrain`): GPU ranges of `parts` go
    staging buffer -> file without entering Python; CRCs are computed in JS."""

    def __init__(self, device):
        self.device = device

    async def write_parts(self, parts, path):
        import js
        from py_engine.train.checkpoint import _js_opts, _js_parts
        res = await js.mwTrain.writeParts(self.device.js, _js_parts(parts),
                                          _js_opts(checksum=True, opfs=path))
        return int(res.size), int(res.crc)

    async def write_bytes(self, path, data):
        import js
        from pyodide.ffi import to_js
        await js.mwTrain.opfsWrite(path, to_js(memoryview(bytes(data))))

    async def checksum(self, path):
        import js
        res = await js.mwTrain.opfsChecksum(path)
        if res is None or _js_nullish(res):
            return None
        return int(res.size), int(res.crc)

    async def read_text(self, path):
        import js
        f = await js.mwTrain.opfsFile(path)
        if f is None or _js_nullish(f):
            return None
        return str(await f.text())

    async def remove(self, path):
        import js
        await js.mwTrain.opfsRemove(path)


def _js_nullish(x):
    import js
    try:
        from pyodide.ffi import jsnull
        if x is jsnull:
            return True
    except ImportError:
        pass
    return x == js.undefined


class MemoryBackend:
    """A dict of {path: bytes} with the backend's interface (tests, and a host-side twin of
    the browser storage). `parts` may hold only ("bytes", b) entries here."""

    def __init__(self):
        self.files = {}

    async def write_parts(self, parts, path):
        import zlib
        data = b"".join(bytes(x) for kind, x in parts)
        self.files[path] = data
        return len(data), zlib.crc32(data)

    async def write_bytes(self, path, data):
        self.files[path] = bytes(data)

    async def checksum(self, path):
        import zlib
        data = self.files.get(path)
        return None if data is None else (len(data), zlib.crc32(data))

    async def read_text(self, path):
        data = self.files.get(path)
        return None if data is None else data.decode("utf-8", "replace")

    async def remove(self, path):
        self.files.pop(path, None)
