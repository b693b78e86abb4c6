"""Find and read WGSL files from `shaders/` (beside py_engine in the repo and in the engine zip)."""
from pathlib import Path

SHADER_DIR = Path(__file__).resolve().parent.parent.parent / "shaders"
_cache = {}


def shader_source(name: str) -> str:
    """Source text of `shaders/<name>.wgsl` (name without the suffix)."""
    if name not in _cache:
        path = SHADER_DIR / f"{name}.wgsl"
        if not path.is_file():
            raise FileNotFoundError(f"no shader file {path}")
        _cache[name] = path.read_text()
    return _cache[name]
