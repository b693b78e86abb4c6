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


# ---- row blocks: pieces larger than one GPU binding (py_engine/gpu/row_chunks.py) -------------

def splittable(name) -> bool:
    """Pieces the engine may hold as row blocks: the token embedding and a separate LM head,
    the two tables that grow with the vocabulary (every op that reads them takes blocks)."""
    from py_engine.models.names import EMBED, LM_HEAD
    return name in (EMBED, LM_HEAD)


def plan_blocks(cfg, shapes, limit, phrase=None):
    """{piece: [(r0, r1)]} of the pieces of `shapes` ({HF name: shape}) that must be split to
    fit `limit` bytes per binding (py_engine/gpu/row_chunks.binding_limit), sized as the loader
    lands them (f32, also when they are narrowed after); pieces that fit are absent. Raises
    DeviceLimitError, in one sentence with the numbers, for a piece that cannot fit: one that
    is not splittable, or one whose single row is past the limit. `phrase` says what the limit
    is (row_chunks.limit_phrase(device)); default "this GPU binds at once (<limit>)"."""
    from math import prod
    from py_engine.gpu.errors import DeviceLimitError
    from py_engine.gpu.row_chunks import row_blocks, size_text
    phrase = phrase or f"this GPU binds at once ({size_text(limit)})"
    out = {}
    for name, shape in shapes.items():
        for piece, _, _, pshape in pieces(cfg, name, tuple(shape)):
            row = 4 * prod(pshape[1:])
            nbytes = row * pshape[0] if pshape else 4
            if nbytes <= limit:
                continue
            if not splittable(piece) or len(pshape) != 2:
                raise DeviceLimitError(
                    f"{piece} {list(pshape)} takes {size_text(nbytes)} as f32, more than "
                    f"{phrase}, and only the embedding and LM head are split into row "
                    "blocks: choose a smaller model or a GPU with larger limits")
            blocks = row_blocks(pshape[0], row, limit)
            if not blocks:
                raise DeviceLimitError(
                    f"{piece} {list(pshape)} cannot be split to fit this GPU: one row takes "
                    f"{size_text(row)} as f32, more than {phrase}: choose a model with a "
                    "smaller d_model or a GPU with larger limits")
            out[piece] = blocks
    return out
