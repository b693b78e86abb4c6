"""Unrolling a virtual-layer model (py_engine/models/schedule.py) into one physical layer per
logical layer: the form transformers loads (it has no layer sharing), each use of a shared layer
a copy of its tensors. `mambaweb unroll` writes it; the engine loads either form.

Pure stdlib: this module is imported inside Pyodide.
"""
import dataclasses

from py_engine.io.hf_names import expected_tensors, layer_tensors
from py_engine.models.schedule import logical_layers


def unrolled(cfg):
    """(cfg2, {cfg2 tensor name: cfg tensor name}): the same model with one physical layer per
    logical layer (each use of a shared layer a copy), the form transformers can load.
    Bidirectional models are refused: transformers has no class for them."""
    if any(k.startswith("bidi_") for k in cfg.layers):
        raise ValueError("bidirectional layers have no transformers class, so this model "
                         "cannot be exported for transformers; keep its mambaweb checkpoint")
    order = logical_layers(cfg)
    cfg2 = dataclasses.replace(cfg, num_hidden_layers=len(order),
                               layers=[cfg.layers[p] for p in order], virtual_layers=[],
                               extra=dict(cfg.extra))
    names = {}
    for j, p in enumerate(order):
        src = list(layer_tensors(cfg, p))
        for dst, s in zip(layer_tensors(cfg2, j), src):
            names[dst] = s
    for name in expected_tensors(cfg2):
        names.setdefault(name, name)     # embedding, final norm, head
    return cfg2, names
