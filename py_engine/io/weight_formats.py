"""Which of a model's weights are stored narrow when loading with `weights=` f16 / bf16 / q8 /
q4, and doing it (py_engine/ops/weight_format.py has the formats and kernels).

Narrow: the token embedding (gathered through dequant.wgsl), a separate LM head, and every
matrix a layer kind multiplies only through ops/linear.py (registry.linear_piece) whose K suits
the format. Everything else (norms, conv taps, A, D, biases, dt biases) stays f32: small, and
read by kernels that expect f32.

Before loading: gpu_bytes_by_format(cfg, shapes) says what each format would take on the GPU
(the generate page's format selector shows it), and format_problem / check_device_format refuse
a format whose kernels need a feature the device lacks (read from the shaders' `enable`s).
"""
import re

from py_engine.io.hf_names import split_layer_name
from py_engine.models.names import EMBED, LM_HEAD
from py_engine.nn import registry
from py_engine.ops import weight_format


def narrowable(cfg, name, shape, fmt) -> bool:
    if fmt == "f32" or not weight_format.fits(tuple(shape), fmt):
        return False
    if name in (EMBED, LM_HEAD):
        return True
    i, rel = split_layer_name(name)
    return (rel is not None and i < cfg.num_hidden_layers
            and registry.linear_piece(registry.get(cfg.layers[i]), rel))


def narrow_weights(device, cfg, weights, fmt, names=None):
    """Replace the narrowable f32 tensors among `names` (default: all) of `weights` in place by
    their `fmt` copies, releasing the f32 ones. Returns the names converted."""
    weight_format.check_format(fmt)
    done = []
    if fmt == "f32":
        return done
    from py_engine.gpu.row_chunks import RowChunks
    batch = device.batch()
    made = []            # narrow blocks of a row-chunked table made so far (one table at a time)

    def narrow(part):
        made.append(weight_format.quantize(batch, part, fmt))
        return made[-1]

    try:
        for name in list(names if names is not None else weights):
            t = weights[name]
            if t.dtype == "f32" and narrowable(cfg, name, t.shape, fmt):
                made.clear()
                if isinstance(t, RowChunks):      # row blocks: each block on its own
                    weights[name] = t.map(narrow)
                else:
                    weights[name] = weight_format.quantize(batch, t, fmt)
                done.append((name, t))
        batch.submit()
    except BaseException:
        # an allocation failed (out of memory): the f32 tensors already replaced in `weights`
        # and a half-narrowed table's blocks are held by nothing the caller releases
        for part in made:
            part.release()
        for _, t in done:
            t.release()
        raise
    for _, t in done:
        t.release()      # queue order: the quantize kernels read it before any reuse
    return [n for n, _ in done]


def format_summary(weights) -> dict:
    """{dtype: tensors} and the bytes the weights occupy on the GPU, for load summaries."""
    counts, nbytes = {}, 0
    for t in weights.values():
        counts[t.dtype] = counts.get(t.dtype, 0) + 1
        nbytes += t.nbytes
    return {"dtypes": counts, "gpu_bytes": nbytes}


def weights_format(weights) -> str:
    """The narrow format of a loaded model ("f32" when none)."""
    fmts = {t.dtype for t in weights.values()} - {"f32"}
    return fmts.pop() if len(fmts) == 1 else ("f32" if not fmts else "mixed")



# ---- before loading: the bytes each format would take, and what the device must offer -------

# A WGSL `enable` directive -> the WebGPU feature a device needs for it.
ENABLE_FEATURES = {"f16": "shader-f16", "subgroups": "subgroups"}
_ENABLE = re.compile(r"^\s*enable\s+([A-Za-z0-9_,\s]+);", re.M)


def format_shaders(fmt):
    """The shader files a model stored as `fmt` runs beyond the f32 ones: its mat-vec (decode),
    and for the narrow formats the one-time quantize and the dequantize of prefill/training."""
    weight_format.check_format(fmt)
    return ["matvec_f32"] if fmt == "f32" else [f"matvec_{fmt}", "quantize", "dequant"]


def needed_features(fmt, read=None):
    """The WebGPU features `fmt`'s kernels need, read from their `enable` directives (today
    none: f16/bf16 are unpacked from u32 words with unpack2x16float, core WGSL, so no
    shader-f16). The mat-vecs' `subgroups` does not count: they run only where the device has
    them (ops/linear._matvec_ok), elsewhere decode takes the dequantize + GEMM path.
    `read(name) -> WGSL text` defaults to the engine's shader files."""
    if read is None:
        from py_engine.gpu.shaders import shader_source as read
    out = set()
    for shader in format_shaders(fmt):
        for m in _ENABLE.finditer(read(shader)):
            for ext in m.group(1).split(","):
                ext = ext.strip()
                if not (ext == "subgroups" and shader.startswith("matvec_")):
                    out.add(ENABLE_FEATURES.get(ext, ext))
    return out


def format_problem(fmt, features, read=None):
    """None when a device offering `features` runs `fmt`, else one sentence that names the
    format and the missing feature and says what to choose instead."""
    missing = sorted(needed_features(fmt, read) - set(features))
    if not missing:
        return None
    others = [f for f in weight_format.FORMATS
              if f != fmt and not (needed_features(f, read) - set(features))]
    return (f"{fmt} weights need the GPU feature {' and '.join(repr(m) for m in missing)}, "
            f"which this GPU does not offer: choose {' or '.join(others) or 'another device'} "
            "instead")


def check_device_format(device, fmt):
    """Refuse, by name and before any byte is read, a format the device cannot run."""
    weight_format.check_format(fmt)
    problem = format_problem(fmt, getattr(device, "features", ()))
    if problem:
        raise ValueError(problem[0].upper() + problem[1:])


def gpu_bytes(cfg, shapes, fmt, blocks=None):
    """Bytes the weights take on the GPU when loaded as `fmt`: `shapes` {HF tensor name: shape}
    of the tensors the model uses, split into GPU pieces as the loader splits them
    (py_engine/io/gpu_layout.py), each narrow where narrow_weights would make it narrow.
    Equals format_summary(weights)["gpu_bytes"] of the loaded model. `blocks` {piece: [(r0,
    r1)]}: pieces held as row blocks (gpu_layout.plan_blocks), each block padded on its own."""
    from py_engine.gpu.tensor import storage_bytes
    from py_engine.io import gpu_layout
    weight_format.check_format(fmt)
    total = 0
    for name, shape in shapes.items():
        for piece, _, _, pshape in gpu_layout.pieces(cfg, name, tuple(shape)):
            pfmt = fmt if narrowable(cfg, piece, pshape, fmt) else "f32"
            rows = (blocks or {}).get(piece) or [(0, pshape[0] if pshape else 1)]
            total += sum(storage_bytes((r1 - r0,) + tuple(pshape[1:]) if pshape else pshape, pfmt)
                         for r0, r1 in rows)
    return total


def gpu_bytes_by_format(cfg, shapes, blocks=None):
    """{format: GPU bytes} for every format (py_engine/ops/weight_format.FORMATS)."""
    return {fmt: gpu_bytes(cfg, shapes, fmt, blocks) for fmt in weight_format.FORMATS}
