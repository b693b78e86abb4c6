"""The layer-kind registry: every layer kind the engine can run, by its schedule name.

A kind is a class (one per module in py_engine/nn/) that owns, for its layers:
  name                      the schedule name ("mamba1", "mamba2", ...)
  mbjs_type                 its MBJS v2 layer-type code (None: MBJS cannot hold it)
  validate(cfg, source)     raise ValueError naming `source` when cfg cannot describe it
  spec(cfg)                 its sub-config: the sizes it reads (nothing else reads them)
  tensors(cfg)              {name relative to "backbone.layers.{i}.mixer.": shape}, in
                            transformers' state_dict order (HF names)
  pieces(cfg, rel, shape)   [(piece rel name, first row, end row, piece shape)]: how one HF
                            tensor becomes GPU tensors (row blocks of fused weights)
  init_rule(cfg, rel, shape) -> (distribution, a, period) for py_engine/train/init.py
  hint(cfg, rel)            a config flag that explains an unexpected tensor, or ""
  wsla_pieces(cfg)          the GPU pieces (or (piece, row0, row1)) WSLA trains: the B/C rows
  lora_defaults             (optional) module names LoRA adapts by default in this kind on top
                            of py_engine/train/lora.py's DEFAULT_TARGETS (Mamba-3: out_proj)
  State(device, cfg, Bsz)   its recurrent decode state: .tensors() GPU tensors, fixed order
  Mixer(cfg, weights, prefix) forward(ctx, h, residual, Bsz, T, state) -> new residual and
                            step(batch, h, residual, Bsz, state) (residual updated in place)
The model, loader, initialiser, converter and checkpoints ask this registry; adding a kind is
adding its module (and one import line in py_engine/nn/__init__.py). LayerKind below holds the
defaults of mbjs_type, pieces, hint and wsla_pieces for kinds that need nothing else.

Pure stdlib: this module is imported inside Pyodide.
"""
_KINDS = {}


def register(kind):
    """Class decorator: make `kind` available under kind.name."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"layer kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def has(name):
    _load()
    return name in _KINDS


def get(name):
    _load()
    if name not in _KINDS:
        raise ValueError(f"layer kind {name!r} has no implementation yet; implemented: "
                         + ", ".join(sorted(_KINDS)))
    return _KINDS[name]


def names():
    _load()
    return sorted(_KINDS)


def by_mbjs_type(code):
    _load()
    for kind in _KINDS.values():
        if kind.mbjs_type == code:
            return kind
    return None


# -- helpers the kinds share ---------------------------------------------------------------

class LayerKind:
    """Defaults a kind may inherit instead of spelling out: no MBJS type, every HF tensor one
    GPU tensor of its own shape, no config flag to hint at (a kind with optional biases sets
    its own), nothing for WSLA to train (WSLA adapts the SSM layers' B/C rows; attention and
    MLP layers stay frozen)."""
    mbjs_type = None

    @staticmethod
    def pieces(cfg, rel, shape):
        return whole(rel, shape)

    @staticmethod
    def hint(cfg, rel):
        return ""

    @staticmethod
    def wsla_pieces(cfg):
        return ()


def whole(rel, shape):
    """The piece list of a tensor that stays one GPU tensor with its own shape."""
    return [(rel, 0, shape[0] if shape else 1, tuple(shape) or (1,))]


def conv_weight(rel, shape):
    """A depthwise conv1d weight [C, 1, K] as one [C, K] piece (same bytes)."""
    return [(rel, 0, shape[0], (shape[0], shape[2]))]


def conv_param_packs(cfg):
    """decode_param_packs of the kinds whose decode folds the conv step into in_proj (Mamba-1,
    Mamba-2): the layer's pre-norm weight, conv1d.weight and conv1d.bias side by side in one
    buffer (ops/weight_pack.pack_params), which that mat-vec reads through the norm weight's
    binding (ops/weight_format.conv_binding) -- 10 storage bindings, the tier a Mac's Chrome
    gives, where binding them apart took 12."""
    return (("norm.weight", "mixer.conv1d.weight", "mixer.conv1d.bias"),)


def linear_piece(kind, rel):
    """Whether piece `rel` of a `kind` layer is a weight matrix used only through
    py_engine/ops/linear.py, so it may be stored in a narrow format (ops/weight_format.py).
    HF names such matrices `*proj.weight` (a `#block` suffix marks a row block); a kind whose
    names differ defines its own `linear_piece(rel)`."""
    own = getattr(kind, "linear_piece", None)
    if own is not None:
        return own(rel)
    return rel.split("#")[0].endswith("proj.weight")


def bias_hint(cfg, rel):
    """Why a Mamba mixer's bias tensor is unexpected: the config flag that says it is absent."""
    if rel in ("in_proj.bias", "out_proj.bias") and not cfg.use_bias:
        return " (config has use_bias=false)"
    if rel == "conv1d.bias" and not cfg.use_conv_bias:
        return " (config has use_conv_bias=false)"
    return ""


def _load():
    # The kinds register themselves on import; importing the package imports them all.
    import py_engine.nn  # noqa: F401
