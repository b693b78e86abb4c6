"""Virtual layers: many logical layers over fewer physical (weight-bearing) ones, and the
config.json keys of this engine's own schedule options.

A model's `layers` (config.py) lists its physical layers, one kind each, and its tensors are
those layers' (backbone.layers.{p}.*, p < num_hidden_layers). `virtual_layers`, when not empty,
is the logical schedule: logical layer j runs physical layer virtual_layers[j] (its pre-norm
and mixer weights). Each logical layer keeps its own decode state (and KV cache); a physical
layer used k times receives the sum of its k uses' gradients; checkpoints store each physical
layer once. Schedules as burn-mamba's `Schedule` (src/schedule.rs) builds them, for L logical
over P physical layers:
    cyclic      j -> j mod P                  (L=8, P=3: 0 1 2 0 1 2 0 1)
    stretched   j -> floor(j * P / L)         (L=8, P=3: 0 0 0 1 1 1 2 2)
    custom      any list, e.g. 0,1,2,2,1,0,0,0
config.json keys (ours; transformers ignores unknown keys, so a compact virtual checkpoint is
not a transformers checkpoint: `mambaweb unroll` writes one that is):
    "mambaweb_virtual_layers": [p_0, p_1, ...]       physical index of each logical layer
    "mambaweb_bidirectional": {"merge": "mean" | "concat", "mask_token_id": m}
                               (py_engine/nn/bidirectional.py, py_engine/train/masked.py)

Pure stdlib: this module is imported inside Pyodide.
"""
VIRTUAL_KEY = "mambaweb_virtual_layers"
BIDI_KEY = "mambaweb_bidirectional"
OUR_KEYS = (VIRTUAL_KEY, BIDI_KEY)
SCHEDULES = ("cyclic", "stretched")


def adopt_keys(cfg):
    """Move our config.json keys from cfg.extra (where unknown keys land) into their fields."""
    if VIRTUAL_KEY in cfg.extra:
        cfg.virtual_layers = cfg.extra.pop(VIRTUAL_KEY)
    if BIDI_KEY in cfg.extra:
        cfg.bidirectional = cfg.extra.pop(BIDI_KEY)


def our_keys(cfg):
    """The keys to_hf_dict writes for cfg (none for a plain model)."""
    out = {}
    if cfg.virtual_layers:
        out[VIRTUAL_KEY] = list(cfg.virtual_layers)
    if cfg.bidirectional:
        out[BIDI_KEY] = dict(cfg.bidirectional)
    return out


def logical_layers(cfg):
    """The physical layer index each logical layer runs, in order."""
    return list(cfg.virtual_layers) if cfg.virtual_layers else list(range(cfg.num_hidden_layers))


def logical_kinds(cfg):
    return [cfg.layers[p] for p in logical_layers(cfg)]


def check(cfg, source, max_layers):
    """Refuse a virtual schedule or bidirectional options that cannot describe this model."""
    v = cfg.virtual_layers
    if not isinstance(v, list):
        raise ValueError(f"{source}: {VIRTUAL_KEY} must be a list of physical layer indices, "
                         f"got {type(v).__name__}")
    if len(v) > max_layers:
        raise ValueError(f"{source}: {VIRTUAL_KEY} has {len(v):,} logical layers, above the "
                         f"{max_layers:,} this engine accepts")
    P = cfg.num_hidden_layers
    for j, p in enumerate(v):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < P:
            raise ValueError(f"{source}: {VIRTUAL_KEY}[{j}] is {p!r}; expected a physical layer "
                             f"index 0..{P - 1} (num_hidden_layers is {P})")
    unused = sorted(set(range(P)) - set(v)) if v else []
    if unused:
        raise ValueError(f"{source}: {VIRTUAL_KEY} never uses physical layer(s) "
                         f"{', '.join(map(str, unused))}; their weights would train nothing: "
                         "use each physical layer at least once or lower num_hidden_layers")
    b = cfg.bidirectional
    if not isinstance(b, dict):
        raise ValueError(f"{source}: {BIDI_KEY} must be an object like {{\"merge\": \"mean\"}}, "
                         f"got {type(b).__name__}")
    bidi = [k for k in cfg.layers if k.startswith("bidi_")]
    if b and not bidi:
        raise ValueError(f"{source}: {BIDI_KEY} is set but no layer is bidirectional "
                         "(layers name bidi_mamba1 / bidi_mamba2 / bidi_mamba3)")
    m = b.get("mask_token_id")
    if m is not None and (isinstance(m, bool) or not isinstance(m, int)
                          or not 0 <= m < cfg.vocab_size):
        raise ValueError(f"{source}: {BIDI_KEY}.mask_token_id is {m!r}; expected a token id "
                         f"0..{cfg.vocab_size - 1}")


def resolve(spec, n_physical):
    """A CLI/page schedule -> [physical index per logical layer].

    spec: "L" or "L:cyclic" (L logical layers cycling over the physical ones),
          "L:stretched" (each physical layer used for a contiguous run), or an explicit
          comma list "0,1,2,2,1,0" (its length is the logical depth)."""
    text = str(spec).strip().replace(" ", "")
    if "," in text:
        try:
            out = [int(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(f"virtual schedule {spec!r}: a custom schedule is physical layer "
                             "indices separated by commas, e.g. 0,1,2,2,1,0") from None
        return out
    count, _, how = text.partition(":")
    how = how or "cyclic"
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"virtual schedule {spec!r}: expected L, L:cyclic, L:stretched (L the "
                         "number of logical layers) or a comma list of physical indices")
    L = int(count)
    if how not in SCHEDULES:
        raise ValueError(f"virtual schedule {spec!r}: {how!r} is not one of "
                         f"{', '.join(SCHEDULES)}")
    if L < n_physical:
        raise ValueError(f"virtual schedule {spec!r}: {L} logical layers cannot use all "
                         f"{n_physical} physical ones; give at least {n_physical}")
    if how == "cyclic":
        return [j % n_physical for j in range(L)]
    return [(j * n_physical) // L for j in range(L)]


def apply_options(kw, virtual=None, bidi=None):
    """Add a virtual schedule and/or bidirectional layers to MambaConfig keyword arguments `kw`
    (a preset's, py_engine/train/init.preset_config), in place.

    bidi: "mean" or "concat" (py_engine/nn/bidirectional.py): every layer becomes its family's
    bidirectional kind, and one vocabulary row is added for the mask token of the masked-token
    objective (mask_token_id = the tokenizer's vocabulary size; py_engine/train/masked.py).
    virtual: a schedule spec for `resolve`, over kw's num_hidden_layers physical layers."""
    from py_engine.models.config import DEFAULT_KIND
    if bidi:
        if kw.get("layers"):
            raise ValueError("bidirectional layers wrap the Mamba families (mamba1, mamba2, "
                             "mamba3), not a hybrid pattern; pick one of those families")
        if bidi not in ("mean", "concat"):
            raise ValueError(f"bidirectional merge {bidi!r} is not one of mean, concat")
        kind = DEFAULT_KIND[kw["model_type"]]
        kw["layers"] = ["bidi_" + kind] * kw["num_hidden_layers"]
        kw["bidirectional"] = {"merge": bidi, "mask_token_id": kw["vocab_size"]}
        kw["vocab_size"] += 1
    if virtual:
        kw["virtual_layers"] = resolve(virtual, kw["num_hidden_layers"])
