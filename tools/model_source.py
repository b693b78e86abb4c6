"""Turn a `--model` argument into something our server can serve to the headless engine.

  a folder with config.json (HF layout)   -> served as it is (through a temp folder linking to it)
  an MBJS .bin file                        -> converted to a temp HF folder first (host side)
  org/name[@revision] not in the HF cache   -> opened from the Hub by the tab (hub_spec)
  anything else                            -> a model name the server lists (models/, HF cache)
"""
import tempfile
from pathlib import Path

from tools import convert_host


def resolve_model(arg, log=print, hints=None):
    """-> (model_dirs or None, model name, cleanup callable). hints: settings an MBJS file does
    not store (tools/arch_options.mbjs_hints); refused for anything but an MBJS file, where
    they would go unused."""
    path = Path(arg).expanduser()
    if hints and not (path.is_file() and convert_host.is_mbjs(path)):
        flags = ", ".join("--" + k.lower().replace("_", "-") for k in hints)
        raise SystemExit(f"mambaweb run: {arg} is not an MBJS .bin file, so {flags} cannot be "
                         "used (an HF folder's config.json holds these settings)")
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
            convert_host.convert(path, Path(tmp.name) / name, hints=hints or None,
                                 log=lambda *a: None)
        except (ValueError, OSError) as e:
            tmp.cleanup()
            raise SystemExit(f"mambaweb run: {e}") from None
        log(f"converted {path} (MBJS) to HF layout for loading")
        return [Path(tmp.name)], name, tmp.cleanup
    return None, arg, lambda: None


def served_catalog():
    """The models `mambaweb serve` offers (models/ and the local HF cache), as its catalog lists
    them; models/ alone where the HF cache cannot be read."""
    from server.app import DEFAULT_MODEL_DIRS
    from server.model_catalog import ModelCatalog
    try:
        cat = ModelCatalog(DEFAULT_MODEL_DIRS, hf_cache=True)
        cat.refresh()
    except Exception:
        cat = ModelCatalog(DEFAULT_MODEL_DIRS, hf_cache=False)
        cat.refresh()
    return cat


def served_entry(name):
    """(catalog entry or None, the served names): `name` matched as the server matches it (its
    URL name, or an HF-cache model's repo id)."""
    cat = served_catalog()
    return cat._lookup(name), sorted(m["name"] for m in cat.list_models(refresh=False))


def hub_spec(arg):
    """`arg` when it names a Hub repo the tab should open itself (py_engine/io/hub.py): shaped
    org/name[@revision], not a local path, and (without @revision) not already in the local HF
    cache, which the server offers offline. Otherwise None."""
    from py_engine.io.hub import looks_like_repo
    if not looks_like_repo(arg) or Path(arg).expanduser().exists():
        return None
    if "@" not in arg:
        from server.model_catalog import ModelCatalog
        try:
            cached = ModelCatalog([], hf_cache=True).list_models()
        except Exception:  # no readable cache: nothing offline to prefer
            cached = []
        if any(m.get("repo_id") == arg for m in cached):
            return None
    return arg.strip()
