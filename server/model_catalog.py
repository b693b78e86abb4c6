"""Find the models the server can offer, and map (model, relative path) to a file safely.

Two sources:
  folder    each configured folder, and each of its sub-folders, holding config.json +
            safetensors (single or index + shards) or PyTorch pytorch_model.bin (single or
            index + shards; read without torch), in transformers' or mamba_ssm's layout, or an
            MBJS .bin file
  hf-cache  the local HuggingFace cache (models--org--name/snapshots/<rev>/), found with
            huggingface_hub.scan_cache_dir(); its files are symlinks into ../../blobs/

Parameter counts and dtypes come from the safetensors / MBJS headers: no tensor data is read.
resolve_file() is the only way the /weights route turns a URL path into a file, so it is
where traversal is stopped: see its docstring.
"""
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from py_engine.io import hf_names, mbjs
from py_engine.io.layouts import internal_name
from py_engine.io.torch_bin import read_bin_file
from py_engine.io.safetensors_format import parse_index, read_header
from py_engine.models.config import MambaConfig

# Small files a page may need besides the weights.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass
class _Entry:
    name: str
    root: Path                  # the model's folder (a snapshot dir for hf-cache)
    allowed: tuple              # resolved targets must stay under one of these
    info: dict
    only: frozenset = field(default_factory=frozenset)   # non-empty: just these files


class ModelCatalog:
    def __init__(self, folders=(), hf_cache=True, cache_dir=None):
        self.folders = [Path(f) for f in folders]
        self.hf_cache = hf_cache
        self.cache_dir = cache_dir
        self._entries = {}

    def refresh(self):
        entries = {}
        for folder in self.folders:
            for e in _scan_folder(folder):
                _add(entries, e, folder.name)
        if self.hf_cache:
            for e in _scan_hf_cache(self.cache_dir):
                _add(entries, e, "hf-cache")
        self._entries = entries
        return self.list_models(refresh=False)

    def list_models(self, refresh=True):
        if refresh:
            return self.refresh()
        return [dict(e.info) for e in self._entries.values()]

    def _lookup(self, name):
        # an hf-cache model answers to its repo id ("org/name") as well as its URL name
        entry = self._entries.get(name)
        if entry is None:
            entry = next((e for e in self._entries.values()
                          if e.info.get("repo_id") == name), None)
        return entry

    def resolve_file(self, name, relpath):
        """The file `relpath` of model `name`, or None.

        Never returns a path outside that model: rejects absolute paths, drive letters,
        backslashes, NUL, empty / "." / ".." / hidden segments, and percent-escapes that are
        still there after one decoding (double-encoded traversal). The resolved target, after
        following symlinks, must lie under the model's folder -- or, for an hf-cache model,
        under its cache repo (snapshot files link to ../../blobs/) or the cache-wide shared
        blob store <cache>/blobs/ that huggingface_hub 2.x links repo blobs into.
        """
        entry = self._lookup(name)
        if entry is None:
            self.refresh()
            entry = self._lookup(name)
        if entry is None:
            return None
        rel = _clean_relpath(relpath)
        if rel is None or (entry.only and rel not in entry.only):
            return None
        candidate = entry.root.joinpath(*rel.split("/"))
        try:
            target = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_file():
            return None
        for root in entry.allowed:
            try:
                if _is_within(target, root.resolve(strict=True)):
                    return target
            except (OSError, RuntimeError):
                continue
        return None


def _clean_relpath(relpath):
    if not isinstance(relpath, str) or not relpath:
        return None
    rel = unquote(relpath)
    if _ESCAPE.search(rel) or "\0" in rel or "\\" in rel:
        return None
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    return rel


def _is_within(path, root):
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _add(entries, entry, qualifier):
    # Names go into URLs (/weights/<name>/<file>): one path segment, unique.
    if entry.name in entries:            # same name in two places: keep both, qualified
        entry.name = f"{entry.name}@{qualifier}"
        entry.info["name"] = entry.name
    entries[entry.name] = entry


# --- folders -------------------------------------------------------------------------

def _scan_folder(folder):
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    if (folder / "config.json").is_file():
        found.append(_hf_dir_entry(folder.name, folder, (folder,), "folder"))
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith("."):
            continue
        if sub.is_dir():
            if (sub / "config.json").is_file():
                found.append(_hf_dir_entry(sub.name, sub, (sub,), "folder"))
            else:
                bins = [b for b in sorted(sub.glob("*.bin")) if _is_mbjs(b)]
                for b in bins:
                    name = sub.name if len(bins) == 1 else f"{sub.name}--{b.stem}"
                    found.append(_mbjs_entry(name, sub, b, only=len(bins) > 1))
        elif sub.suffix == ".bin" and _is_mbjs(sub) and not (folder / "config.json").is_file():
            found.append(_mbjs_entry(sub.stem, folder, sub, only=True))
    return found


def _is_mbjs(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == mbjs.MAGIC_BYTES
    except OSError:
        return False


def _mbjs_entry(name, root, path, only):
    info = {"name": name, "source": "folder", "format": "mbjs", "files": [path.name],
            "weights": [path.name], "architecture": "MambaForCausalLM",
            "model_type": "mamba", "param_count": None, "dtype": None,
            "size_bytes": path.stat().st_size, "supported": False, "error": None}
    try:
        layout = mbjs.read_layout(path, verify_crc=False)   # hashing GBs is not listing
        info["param_count"] = sum(layout.numels)
        info["dtype"] = layout.dtype.upper()
        cfg = mbjs.infer_config(layout)
        info["config"] = cfg.to_hf_dict()
        # the family the file holds (Mamba-1, or our Mamba-3 layer types), not a fixed guess
        info["model_type"] = cfg.model_type
        archs = info["config"].get("architectures") or []
        info["architecture"] = archs[0] if archs else (
            "MambaLMHeadModel" if cfg.model_type == "mamba3" else info["architecture"])
        info["supported"] = True
    except ValueError as e:
        info["error"] = str(e)
    return _Entry(name, root, (root,), info, frozenset([path.name]) if only else frozenset())


def _hf_dir_entry(name, root, allowed, source, files=None, extra=None):
    """An HF-layout model in `root`; `files` lists its relative paths when known (hf-cache)."""
    if files is None:
        files = sorted(str(p.relative_to(root)).replace(os.sep, "/")
                       for p in root.rglob("*") if p.is_file()
                       and not any(s.startswith(".") for s in p.relative_to(root).parts))
    info = {"name": name, "source": source, "format": "hf", "files": [], "weights": [],
            "architecture": None, "model_type": None, "param_count": None, "dtype": None,
            "size_bytes": 0, "supported": False, "error": None}
    info.update(extra or {})
    try:
        conf = json.loads((root / "config.json").read_text())
        info["architecture"] = (conf.get("architectures") or [None])[0]
        info["model_type"] = conf.get("model_type")
        info["config"] = conf
        weights = _weight_files(root, files)
        info["weights"] = weights
        info["files"] = sorted(set(weights) | {f for f in files if f in SIDE_FILES})
        info["size_bytes"] = sum((root / w).stat().st_size for w in weights)
        if not weights:
            raise ValueError(f"{root}: no weights (found {files}): expected model.safetensors, "
                             "sharded safetensors with their index, or pytorch_model.bin")
        shapes, dtypes = {}, set()
        for w in weights:
            if w in (INDEX, BIN_INDEX):
                continue
            tensors = (read_bin_file(root / w) if w.endswith(".bin")
                       else read_header(root / w).tensors)
            for t in tensors:
                shapes[internal_name(t.name)] = t.shape
                dtypes.add(t.dtype)
        info["dtype"] = "+".join(sorted(dtypes))
        # counted from the headers even when the config turns out unsupported
        tied = conf.get("tie_word_embeddings", conf.get("tie_embeddings", True))
        info["param_count"] = sum(_numel(s) for n, s in shapes.items()
                                  if not (tied and n == hf_names.LM_HEAD))
        cfg = MambaConfig.from_hf_dict(conf, str(root / "config.json"))
        info["architecture"] = cfg.architecture
        info["model_type"] = cfg.model_type
        info["layers"] = sorted(set(cfg.layers))
        hf_names.check_tensors(cfg, shapes, str(root))
        info["supported"] = True
    except (OSError, ValueError) as e:
        info["error"] = str(e)
    return _Entry(name, root, allowed, info)


def _weight_files(root, files):
    if INDEX in files:
        shards = sorted(set(parse_index((root / INDEX).read_text(), str(root / INDEX)).values()))
        return [INDEX] + shards
    if "model.safetensors" in files:
        return ["model.safetensors"]
    found = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if found:
        return found
    if BIN_INDEX in files:
        shards = sorted(set(parse_index((root / BIN_INDEX).read_text(),
                                        str(root / BIN_INDEX)).values()))
        return [BIN_INDEX] + shards
    if "pytorch_model.bin" in files:
        return ["pytorch_model.bin"]
    return []


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# --- the HuggingFace cache --------------------------------------------------------------

def hf_cache_dir():
    """The hub cache huggingface_hub would use, read from the environment now (its own
    constant is frozen at import time)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]) / "hub"
    return Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _scan_hf_cache(cache_dir=None):
    cache_dir = Path(cache_dir) if cache_dir else hf_cache_dir()
    if not cache_dir.is_dir():
        return []
    try:
        from huggingface_hub import scan_cache_dir
        info = scan_cache_dir(cache_dir)
    except Exception:            # no cache, unreadable cache, hub not installed: no models
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = _pick_revision(repo)
        snap = Path(rev.snapshot_path)
        files = sorted(str(Path(f.file_path).relative_to(snap)).replace(os.sep, "/")
                       for f in rev.files)
        if "config.json" not in files:
            continue
        allowed = (Path(repo.repo_path), cache_dir / "blobs")
        found.append(_hf_dir_entry(repo.repo_id.replace("/", "--"), snap, allowed, "hf-cache",
                                   files, {"repo_id": repo.repo_id,
                                           "revision": rev.commit_hash}))
    return found


def _pick_revision(repo):
    for rev in repo.revisions:
        if "main" in rev.refs:
            return rev
    return max(repo.revisions, key=lambda r: r.last_modified)


# --- module-level convenience (what the app imports) -----------------------------------

_catalogs = {}          # (folders, hf_cache) -> ModelCatalog, so resolve_file need not rescan
_last = [ModelCatalog()]


def _catalog(folders, hf_cache):
    key = (tuple(str(Path(f).resolve()) for f in folders), bool(hf_cache))
    if key not in _catalogs:
        _catalogs[key] = ModelCatalog(folders, hf_cache)
    return _catalogs[key]


def list_models(folders=(), hf_cache=True, use_hf_cache=None):
    """Scan `folders` and (unless told not to) the HF cache; [model dict].

    Each dict: name (URL-safe, no "/"), files, weights, architecture, model_type,
    param_count, dtype, size_bytes, source ("folder" | "hf-cache"), format ("hf" | "mbjs"),
    supported, error, config; hf-cache models add repo_id and revision.
    """
    cat = _catalog(folders, hf_cache if use_hf_cache is None else use_hf_cache)
    _last[0] = cat
    return cat.refresh()


def resolve_file(*args, hf_cache=True, use_hf_cache=None):
    """resolve_file(name, relpath) on the last list_models() scan, or
    resolve_file(folders, name, relpath) on that folder set. See ModelCatalog.resolve_file."""
    if len(args) == 2:
        return _last[0].resolve_file(*args)
    folders, name, relpath = args
    return _catalog(folders, hf_cache if use_hf_cache is None else use_hf_cache
                    ).resolve_file(name, relpath)
