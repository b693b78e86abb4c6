"""The model-level tensor names every checkpoint layout is mapped onto (transformers' HF names).

Layer tensors are `backbone.layers.{i}.norm.weight` and `backbone.layers.{i}.mixer.<rel>`,
where each layer kind names its <rel> tensors (py_engine/nn/<kind>.py).
"""
EMBED = "backbone.embeddings.weight"
NORM_F = "backbone.norm_f.weight"
LM_HEAD = "lm_head.weight"
LAYER_PREFIX = "backbone.layers."
