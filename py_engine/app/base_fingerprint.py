"""Is this folder the base a fine-tune was trained on? A LoRA run keeps only its adapter and
optimizer moments; after a reload its base must come back from the person's computer (a folder
opened again, or a FileSystemDirectoryHandle read again: web/js/pretrain_page.js), and the run
may only continue on the very same weights.

fingerprint(source) reads little: config.json (parsed), and for each weight file its size,
its header (a safetensors file's JSON header: names, dtypes, shapes, offsets; a PyTorch .bin's
last 64 KiB: its ZIP directory, which holds every entry's CRC-32) and SAMPLES (64) windows of
SAMPLE_BYTES spread evenly over the rest of the file. Two folders with the same layout but
other values (another fine-tune of the same model) differ in the sampled bytes.

difference(saved, found) says in one clause what differs (None when nothing does): config.json
keys first, then the set of weight files, then a file's size, its header, its sampled bytes.
Pure stdlib (hashlib, json): imported inside Pyodide.
"""
import hashlib
import json

VERSION = 1
SAMPLES = 64
SAMPLE_BYTES = 4096
BIN_TAIL = 65536
SHOW_KEYS = 3          # config keys named in a difference


def _sha(data):
    return hashlib.sha256(bytes(data)).hexdigest()


async def _file_print(source, name, kind):
    from py_engine.io.safetensors_format import header_length
    size = await source.size(name)
    if kind == "st":
        n = header_length(await source.read(name, 0, min(size, 8)), size, source.where(name))
        head_end = 8 + n
        header = await source.read(name, 0, head_end)
    else:
        head_end = 0
        header = await source.read(name, max(0, size - BIN_TAIL), size)
    body = size - head_end
    h = hashlib.sha256()
    if body > 0:
        width = min(SAMPLE_BYTES, body)
        starts = sorted({head_end + (k * (body - width)) // max(SAMPLES - 1, 1)
                         for k in range(SAMPLES)})
        for a in starts:
            h.update(bytes(await source.read(name, a, a + width)))
    return {"bytes": int(size), "header": _sha(header), "sample": h.hexdigest()}


async def fingerprint(source):
    """{"version", "config": config.json as a dict, "files": {weight file: {"bytes",
    "header", "sample"}}} of a model folder (a byte source: py_engine/io/byte_sources.py)."""
    from py_engine.io.hf_loader import _weight_files
    raw = await source.read("config.json")
    try:
        config = json.loads(bytes(raw).decode("utf-8"))
    except ValueError as e:
        raise source.error("config.json", f"not valid JSON ({e})") from None
    files = {}
    for name, kind in await _weight_files(source):
        if not await source.exists(name):
            raise source.error(name, "not among the chosen files (choose the whole model "
                                     "folder: config.json and its weight files)")
        files[name] = await _file_print(source, name, kind)
    return {"version": VERSION, "config": config, "files": files}


def _show(v):
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def config_difference(saved, found):
    """One clause naming the config.json keys that differ (up to SHOW_KEYS), or None."""
    keys = sorted(k for k in set(saved) | set(found)
                  if (k in saved) != (k in found) or saved[k] != found[k])
    if not keys:
        return None
    parts = []
    for k in keys[:SHOW_KEYS]:
        here = _show(found[k]) if k in found else "absent"
        then = _show(saved[k]) if k in saved else "absent"
        parts.append(f"{k} {here} here, {then} in the run's base")
    more = f" and {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else ""
    return f"its config.json differs ({'; '.join(parts)}{more})"


def difference(saved, found):
    """What differs between two fingerprints, as one clause, or None when they agree."""
    why = config_difference(saved.get("config") or {}, found.get("config") or {})
    if why:
        return why
    a, b = saved.get("files") or {}, found.get("files") or {}
    if sorted(a) != sorted(b):
        return (f"it has the weight file{'s' if len(b) != 1 else ''} {', '.join(sorted(b))}, "
                f"the run's base had {', '.join(sorted(a))}")
    for name in sorted(a):
        x, y = a[name], b[name]
        if x["bytes"] != y["bytes"]:
            return f"its {name} is {y['bytes']:,} bytes, the run's base's was {x['bytes']:,}"
        if x["header"] != y["header"]:
            return (f"its {name} lists other tensors (names, dtypes, shapes or offsets differ "
                    "from the run's base)")
        if x["sample"] != y["sample"]:
            return (f"its {name} has the same tensors with other values (the weights differ "
                    "from the run's base: another checkpoint of the same model?)")
    return None


def refusal(saved_base, found_name, why):
    """The one sentence a resume gives for a folder that is not the run's base."""
    return (f"the folder {found_name} is not the base this run was trained on "
            f"({saved_base.get('name') or 'a folder'}): {why}; open that folder again, or "
            "discard the saved run, which is kept until then")
