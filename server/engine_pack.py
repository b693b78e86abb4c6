"""Pack py_engine + shaders into one zip for Pyodide, named by its content hash.

The browser fetches `/engine/manifest.json`, then `/engine/engine-<hash>.zip`; because the
URL changes whenever any engine file changes, the zip can be cached forever and a browser
never runs a stale engine.
"""
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKED_DIRS = ("py_engine", "shaders")
PACKED_SUFFIXES = {".py", ".wgsl", ".json"}


@dataclass(frozen=True)
class EnginePack:
    data: bytes
    digest: str  # first 16 hex chars of sha256 over the zip's file list and contents

    @property
    def filename(self) -> str:
        return f"engine-{self.digest}.zip"


def _engine_files(root: Path):
    for top in PACKED_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and path.suffix in PACKED_SUFFIXES and "__pycache__" not in path.parts:
                yield path


def build_engine_pack(root: Path = REPO) -> EnginePack:
    h = hashlib.sha256()
    buf = io.BytesIO()
    # Fixed timestamps so the same sources always give the same bytes.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _engine_files(root):
            rel = path.relative_to(root).as_posix()
            content = path.read_bytes()
            h.update(rel.encode() + b"\0" + content + b"\0")
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return EnginePack(buf.getvalue(), h.hexdigest()[:16])
