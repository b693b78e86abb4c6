"""mamba_ssm hybrids: state-spaces' MambaLMHeadModel with attention layers and gated MLPs.

state-spaces/mamba (mamba_ssm/models/mixer_seq_simple.py, config_mamba.py, modules/block.py,
mha.py, mlp.py) builds n_layer Blocks; block i's mixer is MHA(**attn_cfg) when i is in
attn_layer_idx, else the ssm_cfg["layer"] Mamba mixer, and with d_intermediate > 0 the block
also holds a GatedMLP after the mixer:

    Block i:  residual += mixer(norm(residual));  residual += mlp(norm2(residual))

which is exactly two pre-norm layers of our schedule, [mixer_i, gated_mlp]. So a mamba_ssm
hybrid with n_layer blocks and d_intermediate > 0 is a schedule of 2 * n_layer layers; the
tensor names are mapped by py_engine/io/layouts.py. What mamba_ssm fixes and we follow:
  * every RMSNorm eps 1e-5 (create_block's norm_epsilon; the config has no key for it);
  * GatedMLP hidden size = d_intermediate rounded UP to a multiple of 128 (multiple_of=128);
    fc1 rows [y (F) | gate (F)], out = fc2(y * silu(gate)); no biases (bias=False);
  * MHA: in_proj rows [q (H*Dh) | k (KVH*Dh) | v (KVH*Dh)], biases qkv_proj_bias and
    out_proj_bias (both default True), head h reads kv head h // (H/KVH) (repeat_interleave),
    softmax scale 1/sqrt(Dh) unless softmax_scale is given, flash_attn's RotaryEmbedding on the
    first rotary_emb_dim channels of q and k (rotate_half, base rotary_emb_base) when > 0.
Refused by name (no mixer here computes them): causal false (MHA's default!), d_conv > 0 (a
conv over qkv), mlp_dim > 0 (an MLP fused into in_proj), interleaved rotary, a softmax_scale
other than 1/sqrt(head_dim), rms_norm false.

Pure stdlib: this module is imported inside Pyodide.
"""
GATED_MLP_MULTIPLE = 128        # GatedMLP's multiple_of
_ATTN_KEYS = {"num_heads", "num_heads_kv", "head_dim", "mlp_dim", "qkv_proj_bias",
              "out_proj_bias", "softmax_scale", "causal", "d_conv", "rotary_emb_dim",
              "rotary_emb_base", "rotary_emb_interleaved"}


def is_hybrid_dict(d):
    return bool(d.get("attn_layer_idx")) or bool(d.get("d_intermediate", 0))


def _int(v, name, source, low=0):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{source}: {name} must be an integer >= {low}, got {v!r}")
    return v


def hybrid_fields(d, ssm_kind, source):
    """MambaConfig fields (schedule, attention and MLP sizes, checkpoint_layout) of a mamba_ssm
    config dict `d`; {} when it has no attention layer and no MLP. ssm_kind: the layer kind of
    the non-attention blocks (None: unknown, refused elsewhere)."""
    if not is_hybrid_dict(d) or ssm_kind is None:
        return {}
    n_layer = _int(d.get("n_layer"), "n_layer", source, 1)
    D = _int(d.get("d_model"), "d_model", source, 1)
    idx = d.get("attn_layer_idx") or []
    if not isinstance(idx, list):
        raise ValueError(f"{source}: attn_layer_idx must be a list of layer indices, got {idx!r}")
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layer:
            raise ValueError(f"{source}: attn_layer_idx entry {i!r} is not a layer index in "
                             f"0..{n_layer - 1} (n_layer {n_layer})")
    if len(set(idx)) != len(idx):
        raise ValueError(f"{source}: attn_layer_idx {idx} lists a layer twice")
    d_int = _int(d.get("d_intermediate", 0), "d_intermediate", source)
    F = -(-d_int // GATED_MLP_MULTIPLE) * GATED_MLP_MULTIPLE
    layers = []
    for i in range(n_layer):
        layers.append("attention" if i in idx else ssm_kind)
        if F:
            layers.append("gated_mlp")
    out = {"layers": layers, "num_hidden_layers": len(layers),
           "checkpoint_layout": "mamba_ssm", "layer_norm_epsilon": 1e-5}
    if F:
        out.update(mlp_intermediate_size=F, mlp_bias=False)
    if idx:
        out.update(_attention_fields(d.get("attn_cfg") or {}, D, source))
    return out


def _attention_fields(a, D, source):
    if not isinstance(a, dict):
        raise ValueError(f"{source}: attn_cfg must be an object, got {type(a).__name__}")
    unknown = sorted(set(a) - _ATTN_KEYS)
    if unknown:
        raise ValueError(f"{source}: attn_cfg has keys {unknown} that mamba_ssm's MHA does not "
                         f"take; known: {', '.join(sorted(_ATTN_KEYS))}")
    if "num_heads" not in a:
        raise ValueError(f"{source}: attn_cfg.num_heads is missing (MHA needs it)")
    H = _int(a["num_heads"], "attn_cfg.num_heads", source, 1)
    KVH = _int(a.get("num_heads_kv") or H, "attn_cfg.num_heads_kv", source, 1)
    Dh = a.get("head_dim")
    if Dh is None:
        if D % H:
            raise ValueError(f"{source}: attn_cfg has no head_dim and d_model {D} is not a "
                             f"multiple of num_heads {H}")
        Dh = D // H
    Dh = _int(Dh, "attn_cfg.head_dim", source, 1)
    if a.get("causal", False) is not True:
        raise ValueError(f"{source}: attn_cfg.causal is {a.get('causal', False)!r} (MHA's "
                         "default is false): this engine runs causal language models only; "
                         "set \"causal\": true if the model was trained causally")
    if _int(a.get("d_conv", 0), "attn_cfg.d_conv", source):
        raise ValueError(f"{source}: attn_cfg.d_conv {a['d_conv']} (a causal conv over q|k|v) "
                         "is not supported; only d_conv 0 loads")
    if _int(a.get("mlp_dim", 0), "attn_cfg.mlp_dim", source):
        raise ValueError(f"{source}: attn_cfg.mlp_dim {a['mlp_dim']} (an MLP fused into the "
                         "attention in_proj) is not supported; only mlp_dim 0 loads")
    scale = a.get("softmax_scale")
    if scale is not None and abs(float(scale) - Dh ** -0.5) > 1e-7 * Dh ** -0.5:
        raise ValueError(f"{source}: attn_cfg.softmax_scale {scale} is not 1/sqrt(head_dim "
                         f"{Dh}) = {Dh ** -0.5:.9g}, the only scale the attention kernels use")
    rot = _int(a.get("rotary_emb_dim", 0), "attn_cfg.rotary_emb_dim", source)
    out = {"attention_heads": H, "attention_kv_heads": KVH, "attention_head_dim": Dh,
           "attention_qkv_bias": bool(a.get("qkv_proj_bias", True)),
           "attention_out_bias": bool(a.get("out_proj_bias", True)), "attention_rope": rot > 0}
    if rot:
        if a.get("rotary_emb_interleaved", False):
            raise ValueError(f"{source}: attn_cfg.rotary_emb_interleaved true (GPT-J pairs) is "
                             "not supported; only rotate_half rotary (interleaved false) loads")
        if rot % 2 or rot > Dh:
            raise ValueError(f"{source}: attn_cfg.rotary_emb_dim {rot} must be even and at most "
                             f"head_dim {Dh}")
        # int(Dh * factor) must give back exactly rot (ops/rope.rotary_dim): +0.5 guards the
        # float product against landing just below rot
        out.update(rope_theta=float(a.get("rotary_emb_base", 10000.0)),
                   partial_rotary_factor=(rot + 0.5) / Dh if rot < Dh else 1.0)
    return out


def to_mamba_ssm_hybrid_dict(cfg):
    """The MambaLMHeadModel config.json (mamba_ssm's MambaConfig fields) of a hybrid config."""
    layers = list(cfg.layers)
    mlp = "gated_mlp" in layers
    blocks = layers[0::2] if mlp else layers
    if mlp and (layers[1::2] != ["gated_mlp"] * len(blocks) or "gated_mlp" in blocks):
        raise ValueError("this schedule has gated MLPs that do not follow every mixer, which a "
                         "mamba_ssm MambaLMHeadModel cannot express; save it as another layout")
    if "mlp" in layers:
        raise ValueError("relu2 MLP layers have no mamba_ssm form (its MLP is the gated SwiGLU)")
    ssm_kinds = sorted(set(blocks) - {"attention"})
    if len(ssm_kinds) > 1:
        raise ValueError(f"mamba_ssm uses one ssm_cfg for every mixer; this schedule mixes "
                         f"{', '.join(ssm_kinds)}")
    d = {k: v for k, v in cfg.extra.items() if not k.startswith("_")}
    d.update({"d_model": cfg.hidden_size, "d_intermediate": cfg.mlp_intermediate_size if mlp else 0,
              "n_layer": len(blocks), "vocab_size": cfg.vocab_size, "ssm_cfg": _ssm_cfg(cfg),
              "attn_layer_idx": [i for i, k in enumerate(blocks) if k == "attention"],
              "attn_cfg": _attn_cfg(cfg) if "attention" in blocks else {},
              "rms_norm": True, "residual_in_fp32": cfg.residual_in_fp32,
              "fused_add_norm": bool(cfg.extra.get("fused_add_norm", True)),
              "pad_vocab_size_multiple": cfg.pad_vocab_size_multiple,
              "tie_embeddings": cfg.tie_word_embeddings})
    return d


def _ssm_cfg(cfg):
    if cfg.model_type == "mamba3":
        return cfg._to_mamba_ssm_dict()["ssm_cfg"]
    common = {"d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
              "conv_bias": cfg.use_conv_bias, "bias": cfg.use_bias, "dt_min": cfg.time_step_min,
              "dt_max": cfg.time_step_max, "dt_init_floor": cfg.time_step_floor}
    if cfg.model_type == "mamba":
        return dict(common, layer="Mamba1", dt_rank=cfg.time_step_rank)
    out = dict(common, layer="Mamba2", headdim=cfg.head_dim, ngroups=cfg.n_groups,
               chunk_size=cfg.chunk_size)
    lo, hi = cfg.time_step_limit
    if (lo, hi) != (0.0, float("inf")):
        out["dt_limit"] = [lo, hi]
    return out


def _attn_cfg(cfg):
    from py_engine.ops.rope import rotary_dim
    out = {"num_heads": cfg.attention_heads, "num_heads_kv": cfg.attention_kv_heads,
           "head_dim": cfg.attention_head_dim, "qkv_proj_bias": cfg.attention_qkv_bias,
           "out_proj_bias": cfg.attention_out_bias, "causal": True}
    if cfg.attention_rope:
        out.update(rotary_emb_dim=rotary_dim(cfg.attention_head_dim, cfg.partial_rotary_factor),
                   rotary_emb_base=cfg.rope_theta)
    return out
