"""HF tensor names and shapes of MambaForCausalLM / FalconMambaForCausalLM, and their check.

Verified against transformers 5.23 (tests/unit/test_convert.py instantiates tiny models and
compares state_dict() names and shapes with expected_tensors):
  backbone.embeddings.weight                    [V, D]
  backbone.layers.{i}.norm.weight               [D]
  backbone.layers.{i}.mixer.in_proj.weight      [2I, D]    rows: x (first I) then gate z
  backbone.layers.{i}.mixer.in_proj.bias        [2I]       only if use_bias
  backbone.layers.{i}.mixer.conv1d.weight       [I, 1, K]  depthwise
  backbone.layers.{i}.mixer.conv1d.bias         [I]        only if use_conv_bias
  backbone.layers.{i}.mixer.x_proj.weight       [R+2N, I]  rows: dt (R), B (N), C (N); never a bias
  backbone.layers.{i}.mixer.dt_proj.weight      [I, R]
  backbone.layers.{i}.mixer.dt_proj.bias        [I]        always
  backbone.layers.{i}.mixer.A_log               [I, N]
  backbone.layers.{i}.mixer.D                   [I]
  backbone.layers.{i}.mixer.out_proj.weight     [D, I]
  backbone.layers.{i}.mixer.out_proj.bias       [D]        only if use_bias
  backbone.norm_f.weight                        [D]
  lm_head.weight                                [V, D]     untied only
FalconMamba has the same tensors: its B/C/dt RMSNorm carries no weight.
A tied checkpoint saved by transformers 5.23 does NOT contain lm_head.weight; older saves
(e.g. the state-spaces/*-hf uploads) may, so a tied lm_head.weight is tolerated, not required.

Pure stdlib: this module is imported inside Pyodide.
"""

from py_engine.models.names import EMBED, LAYER_PREFIX, LM_HEAD, NORM_F  # noqa: F401


def layer_tensors(cfg, i):
    """{name: shape} of layer i: its pre-norm, then its kind's mixer tensors (the registry)."""
    from py_engine.nn import registry
    kind = registry.get(cfg.layers[i])
    p = f"{LAYER_PREFIX}{i}."
    out = {p + "norm.weight": (cfg.hidden_size,)}
    for rel, shape in kind.tensors(cfg).items():
        out[p + "mixer." + rel] = tuple(shape)
    return out


def split_layer_name(name):
    """'backbone.layers.3.mixer.in_proj.weight' -> (3, 'in_proj.weight'); the layer norm gives
    (3, None); any other name (None, None)."""
    if not name.startswith(LAYER_PREFIX):
        return None, None
    idx, _, rest = name[len(LAYER_PREFIX):].partition(".")
    if not idx.isdigit():
        return None, None
    if rest.startswith("mixer."):
        return int(idx), rest[len("mixer."):]
    return int(idx), None


def expected_tensors(cfg):
    """{HF tensor name: shape tuple} for the whole model (lm_head only when untied)."""
    out = {EMBED: (cfg.vocab_size, cfg.hidden_size)}
    for i in range(cfg.num_hidden_layers):
        out.update(layer_tensors(cfg, i))
    out[NORM_F] = (cfg.hidden_size,)
    if not cfg.tie_word_embeddings:
        out[LM_HEAD] = (cfg.vocab_size, cfg.hidden_size)
    return out


def check_tensors(cfg, infos, file):
    """Raise ValueError naming `file` unless `infos` hold exactly the tensors `cfg` needs.

    infos: iterable of objects with .name and .shape (safetensors TensorInfo), or a
    {name: shape} dict. Every problem is listed, not just the first, so one run fixes all.
    """
    found = dict(infos) if isinstance(infos, dict) else {t.name: tuple(t.shape) for t in infos}
    found = {k: tuple(v) for k, v in found.items()}
    want = expected_tensors(cfg)
    # A tied checkpoint may carry a redundant copy of the embedding as lm_head.weight.
    optional = {LM_HEAD: want[EMBED]} if cfg.tie_word_embeddings else {}
    problems = []
    for name, shape in want.items():
        if name not in found:
            problems.append(f"missing tensor {name} (expected shape {list(shape)})")
        elif found[name] != shape:
            problems.append(f"tensor {name}: expected shape {list(shape)}, found "
                            f"{list(found[name])}" + _shape_hint(cfg, name, shape, found[name]))
    for name, shape in found.items():
        if name in want:
            continue
        if name in optional:
            if shape != optional[name]:
                problems.append(f"tensor {name}: expected shape {list(optional[name])}, "
                                f"found {list(shape)}")
            continue
        problems.append(f"unexpected tensor {name} {list(shape)}" + _hint(cfg, name))
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{file}: tensors do not match config ({cfg.model_type}, "
                         f"{cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}):\n  "
                         + "\n  ".join(shown) + more)


def _shape_hint(cfg, name, want, found):
    # The vocabulary is the size a config most often gets wrong (a tokenizer's count written
    # where the padded embedding's belongs): say which number disagrees with which.
    if name in (EMBED, LM_HEAD) and len(found) == 2 and found[1] == cfg.hidden_size:
        return (f" (config.json vocab_size is {cfg.vocab_size} but the tensor has {found[0]} "
                "rows: set vocab_size to the embedding's row count)")
    if len(found) == 2 and tuple(found[::-1]) == tuple(want):
        return " (transposed?)"
    return ""


def _hint(cfg, name):
    # Most "unexpected" tensors come from a config flag that disagrees with the weights.
    i, rel = split_layer_name(name)
    if rel is not None and i < cfg.num_hidden_layers:
        from py_engine.nn import registry
        hint = registry.get(cfg.layers[i]).hint(cfg, rel)
        if hint:
            return hint
    if name == LM_HEAD:
        return " (config has tie_word_embeddings=true)"
    if name.startswith("backbone.layers."):
        idx = name.split(".")[2]
        if idx.isdigit() and int(idx) >= cfg.num_hidden_layers:
            return f" (config has num_hidden_layers={cfg.num_hidden_layers})"
    return ""


# --- MBJS <-> HF ------------------------------------------------------------
# MBJS Mamba-1 layer parameter order (npm Mamba1Block.parameters()), each mapped to its HF
# tensor and the transform between them:
#   "copy"   same row-major values
#   "flip"   conv taps reversed: MBJS w[c, k] multiplies x[t-k]; PyTorch's conv1d weight
#            W[c, 0, j] multiplies x[t-(K-1)+j], so w[c, k] = W[c, 0, K-1-k]
#   "bias"   HF may have no such tensor: MBJS stores zeros, HF drops it when all zero
MBJS_MAMBA1_PARAMS = (
    ("wInProj", "mixer.in_proj.weight", "copy"),     # [2I, D]
    ("bInProj", "mixer.in_proj.bias", "bias"),       # [2I]
    ("wConv", "mixer.conv1d.weight", "flip"),        # [I, K]  (HF [I, 1, K])
    ("bConv", "mixer.conv1d.bias", "bias"),          # [I]
    ("wXProj", "mixer.x_proj.weight", "copy"),       # [R+2N, I]
    ("bXProj", "mixer.x_proj.bias", "bias"),         # [R+2N]  (HF never has it)
    ("wDtProj", "mixer.dt_proj.weight", "copy"),     # [I, R]
    ("bDtProj", "mixer.dt_proj.bias", "copy"),       # [I]
    ("A_log", "mixer.A_log", "copy"),                # [I, N]
    ("D_vec", "mixer.D", "copy"),                    # [I]
    ("wOutProj", "mixer.out_proj.weight", "copy"),   # [D, I]
    ("bOutProj", "mixer.out_proj.bias", "bias"),     # [D]
    ("normWeight", "norm.weight", "copy"),           # [D]
)


def mbjs_mamba1_shapes(cfg):
    """[(mbjs name, shape)] of one MBJS Mamba-1 layer, in file order."""
    D, I, N, K, R = (cfg.hidden_size, cfg.intermediate_size, cfg.state_size,
                     cfg.conv_kernel, cfg.time_step_rank)
    shapes = {"wInProj": (2 * I, D), "bInProj": (2 * I,), "wConv": (I, K), "bConv": (I,),
              "wXProj": (R + 2 * N, I), "bXProj": (R + 2 * N,), "wDtProj": (I, R),
              "bDtProj": (I,), "A_log": (I, N), "D_vec": (I,), "wOutProj": (D, I),
              "bOutProj": (D,), "normWeight": (D,)}
    return [(name, shapes[name]) for name, _, _ in MBJS_MAMBA1_PARAMS]


# Our MBJS Mamba-3 layer (types 16/17, py_engine/io/mbjs.py): every tensor of mamba_ssm's Mamba3
# mixer, then the layer's pre-norm, all "copy" (row-major as mamba_ssm stores them). A fixed
# count of 13 keeps the numel list splittable; a tensor the model does not have (SISO: mimo_*;
# no is_outproj_norm: norm) is written with numel 0 ("absent"), which is how a reader tells.
#   I = expand*D = H*P, R = MIMO rank (1: SISO), G groups, N d_state, S rotated angle pairs
MBJS_MAMBA3_PARAMS = (
    ("inProj", "mixer.in_proj.weight", "copy"),      # [2I + 2RGN + 3H + S, D]
    ("dtBias", "mixer.dt_bias", "copy"),             # [H]
    ("D_vec", "mixer.D", "copy"),                    # [H]
    ("B_norm", "mixer.B_norm.weight", "copy"),       # [N]
    ("C_norm", "mixer.C_norm.weight", "copy"),       # [N]
    ("B_bias", "mixer.B_bias", "copy"),              # [H, R, N]
    ("C_bias", "mixer.C_bias", "copy"),              # [H, R, N]
    ("mimoX", "mixer.mimo_x", "copy"),               # [H, R, P]  MIMO only
    ("mimoZ", "mixer.mimo_z", "copy"),               # [H, R, P]  MIMO only
    ("mimoO", "mixer.mimo_o", "copy"),               # [H, R, P]  MIMO only
    ("outNorm", "mixer.norm.weight", "copy"),        # [I]        is_outproj_norm only
    ("outProj", "mixer.out_proj.weight", "copy"),    # [D, I]
    ("normWeight", "norm.weight", "copy"),           # [D]        the layer's pre-norm
)


# MBJS attention layer (type 3): the npm engine's AttentionBlock.parameters() order
# (@seanhogg/builderforce-memory-engine 2026.7.14, src/model/attention_block.ts lines 308-329),
# each mapped onto HF's tensors as its documented data flow (lines 8-16) and its linear kernel
# (Y = X W^T + b, W [out, in] row-major, src/kernels/linear_projection.ts) define them:
#   wQKV [3D, D]   rows q | k | v: q_proj, k_proj, v_proj.weight stacked  ("rows")
#   bQKV [3D]      q | k | v biases (zeros where HF has none)              ("rows" / "bias")
#   wO [D, D]      o_proj.weight; bO [D] o_proj.bias (zeros where none);  normWeight [D] the
#                  layer's pre-norm. With hasFfn npm appends wFfn1, bFfn1, wFfn2, bFfn2
#                  (9 parameters): no layer kind here computes that FFN (refused by name).
# npm's block has one K/V head per query head and heads x head_dim = d_model (wQKV is
# [3*d_model, d_model]), no rotary embedding, and stores no head count (a reader needs it).
# A mamba_ssm-layout attention (fused in_proj rows q | k | v) is wQKV as it is ("copy").
# "rows" entries name a tuple of HF tensors; mbjs_parts splits them.
MBJS_ATTENTION_PARAMS = ("wQKV", "bQKV", "wO", "bO", "normWeight")


def mbjs_attention_problem(cfg, i):
    """Why attention layer i cannot be an npm AttentionBlock, or None."""
    H, KVH, Dh, D = (cfg.attention_heads, cfg.attention_kv_heads, cfg.attention_head_dim,
                     cfg.hidden_size)
    if KVH != H:
        return (f"layer {i} is attention with {KVH} key/value heads for {H} query heads "
                "(grouped-query), and the npm engine's AttentionBlock has one per query head "
                "(wQKV [3*d_model, d_model])")
    if H * Dh != D:
        return (f"layer {i} is attention with {H} heads x head_dim {Dh} = {H * Dh}, and the npm "
                f"engine's AttentionBlock needs heads x head_dim = d_model ({D})")
    if cfg.attention_rope:
        return (f"layer {i} is attention with a rotary position embedding, which the npm "
                "engine's AttentionBlock does not have")
    return None


def _mbjs_attention(cfg, i, hf, p):
    D = cfg.hidden_size
    m = p + "mixer."
    if cfg.checkpoint_layout == "mamba_ssm":
        qkv, qkv_b, o, o_b = ((m + "in_proj.weight"), (m + "in_proj.bias"),
                              (m + "out_proj.weight"), (m + "out_proj.bias"))
        w_how = "copy"
    else:
        qkv = tuple(m + f"{r}_proj.weight" for r in "qkv")
        qkv_b = tuple(m + f"{r}_proj.bias" for r in "qkv")
        o, o_b = m + "o_proj.weight", m + "o_proj.bias"
        w_how = "rows"

    def shape(name):
        if isinstance(name, tuple):
            shapes = [hf.get(n) for n in name]
            return None if None in shapes else tuple(shapes)
        return hf.get(name)
    b_how = w_how if shape(qkv_b) else "bias"
    return [(f"layer{i}.wQKV", (3 * D, D), qkv, shape(qkv), w_how),
            (f"layer{i}.bQKV", (3 * D,), qkv_b, shape(qkv_b), b_how),
            (f"layer{i}.wO", (D, D), o, shape(o), "copy"),
            (f"layer{i}.bO", (D,), o_b, shape(o_b), "copy" if shape(o_b) else "bias"),
            (f"layer{i}.normWeight", (D,), p + "norm.weight", hf[p + "norm.weight"], "copy")]


def mbjs_parts(entry):
    """[(hf name, hf shape or None, start, end)] of one mbjs_plan entry: the element range
    [start, end) of the MBJS tensor each HF tensor is. A "rows" entry (npm's wQKV / bQKV) is its
    HF tensors' rows stacked in order, in equal parts."""
    mname, mshape, hname, hshape, how = entry
    n = 1
    for d in mshape:
        n *= d
    if not isinstance(hname, tuple):
        return [(hname, hshape, 0, n)]
    k = len(hname)
    part = n // k
    shapes = hshape or (None,) * k
    return [(h, s, j * part, (j + 1) * part) for j, (h, s) in enumerate(zip(hname, shapes))]


def mbjs_label(hname):
    """The mixer-relative name(s) of an entry's HF tensor(s), for notes: 'q|k|v_proj.bias'."""
    if isinstance(hname, tuple):
        rels = [h.split(".mixer.")[-1] for h in hname]
        tail = rels[0].split("_", 1)[-1] if all("_" in r for r in rels) else None
        if tail and all(r.endswith("_" + tail) for r in rels):
            return "|".join(r[:-len(tail) - 1] for r in rels) + "_" + tail
        return "|".join(rels)
    return hname.split(".mixer.")[-1]


def _mbjs_layer(cfg, i):
    """[(mbjs name, mbjs shape, hf name, hf shape or None, transform)] of layer i."""
    hf = layer_tensors(cfg, i)
    p = f"{LAYER_PREFIX}{i}."
    if cfg.layers[i] == "attention":
        return _mbjs_attention(cfg, i, hf, p)
    if cfg.layers[i] == "mamba1":
        shapes = dict(mbjs_mamba1_shapes(cfg))
        return [(f"layer{i}.{m}", shapes[m], p + suffix, hf.get(p + suffix), how)
                for m, suffix, how in MBJS_MAMBA1_PARAMS]
    out = []
    for m, suffix, how in MBJS_MAMBA3_PARAMS:
        shape = hf.get(p + suffix)
        out.append((f"layer{i}.{m}", shape or (0,), p + suffix, shape,
                    how if shape else "absent"))
    return out


def mbjs_plan(cfg):
    """The whole MBJS parameter list mapped onto HF names, in MBJS file order.

    Returns [(mbjs_name, mbjs_shape, hf_name, hf_shape_or_None, transform)]; hf_shape is None
    where the HF model has no such tensor under `cfg`: a Mamba-1 "bias" MBJS writes as zeros, or
    a Mamba-3 tensor the model does not have ("absent", numel 0).
    """
    if cfg.virtual_layers:
        raise ValueError(f"this model has virtual layers ({len(cfg.virtual_layers)} logical over "
                         f"{cfg.num_hidden_layers} physical, config.json mambaweb_virtual_layers)"
                         ", which MBJS cannot record (it stores one weight set per layer and no "
                         "schedule); keep it as HF safetensors")
    for i, kind in enumerate(cfg.layers):
        if kind == "attention":
            problem = mbjs_attention_problem(cfg, i)
            if problem:
                raise ValueError(problem + "; keep this model in HF safetensors")
            if "mamba3" in cfg.layers:
                raise ValueError(f"layer {i} is attention in a Mamba-3 model: MBJS carries "
                                 "attention next to Mamba-1 layers only (the npm engine has no "
                                 "state-spaces Mamba-3); keep this model in HF safetensors")
        elif kind not in ("mamba1", "mamba3"):
            raise ValueError(f"layer {i} is {kind!r}: MBJS conversion covers Mamba-1, Mamba-3 "
                             "and attention layers only; keep this model in HF safetensors")
    hf = expected_tensors(cfg)
    plan = [("embedding", (cfg.vocab_size, cfg.hidden_size), EMBED, hf[EMBED], "copy")]
    for i in range(cfg.num_hidden_layers):
        plan.extend(_mbjs_layer(cfg, i))
    plan.append(("final_norm", (cfg.hidden_size,), NORM_F, hf[NORM_F], "copy"))
    return plan
