"""Each layer's row blocks that decode multiplies together, packed side by side in one GPU
buffer (py_engine/ops/weight_pack.py) as its kind names them (`decode_packs(cfg)`: Mamba-3's
in_proj), and its small parameters that one step kernel reads (`decode_param_packs(cfg)`:
Mamba-3's biases, D, norm weights and MIMO projections). Done once the weights are loaded (py_engine/io/hf_loader.py, inside its out-of-memory
scope) and again, where nothing is packed yet, when a model is built (py_engine/models/mamba.py:
models made in other ways, training's fresh ones)."""
from py_engine.nn import registry
from py_engine.ops.weight_pack import pack_params, pack_rows


def pack_model(device, cfg, weights):
    """Pack every layer's decode_packs groups (row blocks of one mat-vec) and its
    decode_param_packs groups (small f32 parameters one kernel reads through one binding, named
    relative to the layer: "norm.weight" is its pre-norm, "mixer.D" its mixer's) found in
    `weights` ({piece name: tensor}); a parameter the config leaves out (None from weights) is
    left out of its group. Returns how many groups moved."""
    moved = 0
    for i, kind in enumerate(cfg.layers):
        cls = registry.get(kind)
        pre = f"backbone.layers.{i}.mixer."
        groups = getattr(cls, "decode_packs", None)
        for group in (groups(cfg) if groups is not None else ()):
            ts = [weights.get(pre + rel) for rel in group]
            if all(t is not None for t in ts):
                moved += pack_rows(device, ts)
        groups = getattr(cls, "decode_param_packs", None)     # names relative to the layer
        for group in (groups(cfg) if groups is not None else ()):
            ts = [weights.get(f"backbone.layers.{i}.{rel}") for rel in group]
            moved += pack_params(device, [t for t in ts if t is not None])
    return moved
