"""How HF tensors become GPU tensors: the one place that says which tensors are split.

Row blocks of a fused HF weight are separate GPU tensors, so every kernel reads a plain
contiguous matrix and no binding needs an offset (offsets must be 256-byte aligned, which
row boundaries like I*D*4 often are not):
  in_proj.weight [2I, D] -> "#x" rows [0, I)   and "#z" rows [I, 2I)     (same for .bias)
  x_proj.weight [R+2N, I] -> "#dt" rows [0, R), "#B" rows [R, R+N), "#C" rows [R+N, R+2N)
  conv1d.weight [I, 1, K] -> one piece of shape [I, K] (same bytes)
Every other tensor is one piece with its own shape.
"""


def pieces(cfg, name, shape):
    """[(piece_name, first_row, end_row, piece_shape)] covering `name` in row order."""
    I, N, R = cfg.intermediate_size, cfg.state_size, cfg.time_step_rank
    if name.endswith("mixer.in_proj.weight") or name.endswith("mixer.in_proj.bias"):
        rest = tuple(shape[1:])
        return [(name + "#x", 0, I, (I,) + rest), (name + "#z", I, 2 * I, (I,) + rest)]
    if name.endswith("mixer.x_proj.weight"):
        rest = tuple(shape[1:])
        return [(name + "#dt", 0, R, (R,) + rest), (name + "#B", R, R + N, (N,) + rest),
                (name + "#C", R + N, R + 2 * N, (N,) + rest)]
    if name.endswith("mixer.conv1d.weight"):
        return [(name, 0, shape[0], (shape[0], shape[2]))]
    return [(name, 0, shape[0] if shape else 1, tuple(shape) or (1,))]
