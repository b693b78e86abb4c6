"""Turn a `--model` argument into something our server can serve to the headless engine.

  a folder with config.json (HF layout)   -> served as it is (through a temp folder linking to it)
  an MBJS .bin file                        -> converted to a temp HF folder first (host side)
  anything else                            -> a model name the server lists (models/, HF cache)
"""
import tempfile
from pathlib import Path

from tools import convert_host


def resolve_model(arg, log=print):
    """-> (model_dirs or None, model name, cleanup callable)."""
    path = Path(arg).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SystemExit(f"{path}: no config.json here; an HF model folder holds config.json "
                             "and model.safetensors (or shards + index)")
        tmp = tempfile.TemporaryDirectory(prefix="mambaweb-model-")
        name = path.resolve().name
        (Path(tmp.name) / name).symlink_to(path.resolve(), target_is_directory=True)
        return [Path(tmp.name)], name, tmp.cleanup
    if path.is_file():
        if not convert_host.is_mbjs(path):
            raise SystemExit(f"{path}: not an MBJS file and not a folder; give an HF model folder, "
                             "an MBJS .bin, or a model name from `mambaweb serve`'s list")
        tmp = tempfile.TemporaryDirectory(prefix="mambaweb-model-")
        name = path.stem
        try:
            convert_host.convert(path, Path(tmp.name) / name, log=lambda *a: None)
        except (ValueError, OSError) as e:
            tmp.cleanup()
            raise SystemExit(f"mambaweb run: {e}") from None
        log(f"converted {path} (MBJS) to HF layout for loading")
        return [Path(tmp.name)], name, tmp.cleanup
    return None, arg, lambda: None
