"""How HF tensors become GPU tensors: the layer kind of the tensor's layer decides.

Row blocks of a fused HF weight are separate GPU tensors, so every kernel reads a plain
contiguous matrix and no binding needs an offset (offsets must be 256-byte aligned, which
row boundaries like I*D*4 often are not). Each kind's `pieces` (py_engine/nn/<kind>.py) says
how its mixer tensors split (Mamba-1: in_proj -> #x/#z, x_proj -> #dt/#B/#C); every tensor
outside a mixer is one piece with its own shape.
"""
from py_engine.io.hf_names import split_layer_name


def pieces(cfg, name, shape):
    """[(piece_name, first_row, end_row, piece_shape)] covering `name` in row order."""
    from py_engine.nn import registry
    i, rel = split_layer_name(name)
    if rel is not None and i < cfg.num_hidden_layers:
        prefix = name[:len(name) - len(rel)]
        return [(prefix + p, r0, r1, tuple(s))
                for p, r0, r1, s in registry.get(cfg.layers[i]).pieces(cfg, rel, tuple(shape))]
    return registry.whole(name, tuple(shape))
