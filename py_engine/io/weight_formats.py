"""Which of a model's weights are stored narrow when loading with `weights=` f16 / bf16 / q8 /
q4, and doing it (py_engine/ops/weight_format.py has the formats and kernels).

Narrow: the token embedding (gathered through dequant.wgsl), a separate LM head, and every
matrix a layer kind multiplies only through ops/linear.py (registry.linear_piece) whose K suits
the format. Everything else (norms, conv taps, A, D, biases, dt biases) stays f32: small, and
read by kernels that expect f32.
"""
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
    batch = device.batch()
    for name in list(names if names is not None else weights):
        t = weights[name]
        if t.dtype == "f32" and narrowable(cfg, name, t.shape, fmt):
            weights[name] = weight_format.quantize(batch, t, fmt)
            done.append((name, t))
    batch.submit()
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

