"""Each layer's row blocks that decode multiplies together, packed side by side in one GPU
buffer (py_engine/ops/weight_pack.py) as its kind names them (`decode_packs(cfg)`: Mamba-3's
in_proj). Done once the weights are loaded (py_engine/io/hf_loader.py, inside its out-of-memory
scope) and again, where nothing is packed yet, when a model is built (py_engine/models/mamba.py:
models made in other ways, training's fresh ones)."""
from py_engine.nn import registry
from py_engine.ops.weight_pack import pack_rows


def pack_model(device, cfg, weights):
    """Pack every layer's decode_packs groups found whole in `weights` ({piece name: tensor});
    returns how many groups moved."""
    moved = 0
    for i, kind in enumerate(cfg.layers):
        groups = getattr(registry.get(kind), "decode_packs", None)
        for group in (groups(cfg) if groups is not None else ()):
            ts = [weights.get(f"backbone.layers.{i}.mixer.{rel}") for rel in group]
            if all(t is not None for t in ts):
                moved += pack_rows(device, ts)
    return moved
