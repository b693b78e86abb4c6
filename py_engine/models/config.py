"""MambaConfig: the model hyper-parameters, read from / written to an HF config.json dict.

Covers transformers' `MambaForCausalLM` (model_type "mamba"), `FalconMambaForCausalLM`
("falcon_mamba", which adds a weightless RMSNorm on B, C and dt with `mixer_rms_eps`) and
`Mamba2ForCausalLM` ("mamba2": heads, head_dim, n_groups, chunk_size, time_step_limit), and
mamba_ssm's `MambaLMHeadModel` config.json (`d_model`, `n_layer`, `ssm_cfg`, ...; see
`from_mamba_ssm_dict`). Defaults and derived values mirror transformers' config classes per
model_type (`_TYPE_DEFAULTS`) so that a config.json missing a key means here what it means there:
  intermediate_size = int(expand * hidden_size)   (HF ignores any stored intermediate_size)
  time_step_rank    = ceil(hidden_size / 16) when "auto"

`layers` is the schedule: one layer kind per layer ("mamba1", "mamba2", ...). Each kind reads
its own sub-config from this object through its `spec(cfg)` (py_engine/nn/<kind>.py), so the
fields here are the union of the HF fields; nothing outside a kind's module reads its fields.

Pure stdlib: this module is imported inside Pyodide.
"""
import math
from dataclasses import dataclass, field, fields

from py_engine.models import schedule

# model_type -> the architecture class name transformers registers for it.
SUPPORTED_MODEL_TYPES = {
    "mamba": "MambaForCausalLM",
    "falcon_mamba": "FalconMambaForCausalLM",
    "mamba2": "Mamba2ForCausalLM",
    "nemotron_h": "NemotronHForCausalLM",
    "mamba3": "Mamba3LMHeadModel",      # mamba_ssm's MambaLMHeadModel (no transformers class)
}
# The layer kind every layer of a model_type has (a config may carry an explicit schedule).
DEFAULT_KIND = {"mamba": "mamba1", "falcon_mamba": "mamba1", "mamba2": "mamba2",
                "mamba3": "mamba3"}
# Layer kinds the schedule may name. The registry (py_engine/nn/registry.py) says which have an
# implementation; the rest are reserved so a schedule can be written down before the mixer exists.
LAYER_TYPES = ("mamba1", "mamba2", "mamba3", "attention", "mlp", "gated_mlp",
               "bidi_mamba1", "bidi_mamba2", "bidi_mamba3")   # bidi_*: py_engine/nn/bidirectional.py
# NemotronH's names for its block types (layers_block_type, older and newer spellings, and the
# hybrid_override_pattern characters) -> our layer kinds.
NEMOTRON_KINDS = {"mamba": "mamba2", "linear_attention": "mamba2", "M": "mamba2",
                  "attention": "attention", "full_attention": "attention", "*": "attention",
                  "mlp": "mlp", "-": "mlp"}
NEMOTRON_NAMES = {"mamba2": "mamba", "attention": "attention", "mlp": "mlp"}
# transformers' defaults where a model_type's config class differs from MambaConfig's.
_TYPE_DEFAULTS = {
    "mamba2": {"vocab_size": 32768, "hidden_size": 4096, "num_hidden_layers": 64,
               "state_size": 128, "tie_word_embeddings": False, "num_heads": 128,
               "head_dim": 64, "n_groups": 8, "chunk_size": 256},
}

# Keys this dataclass models; everything else in config.json rides along in `extra`
# (token ids, use_cache, ...) so from_hf_dict -> to_hf_dict loses nothing.
_DERIVED_OR_OURS = {"architectures", "model_type", "intermediate_size", "layers",
                    "transformers_version"}


@dataclass
class MambaConfig:
    model_type: str = "mamba"
    vocab_size: int = 50280
    hidden_size: int = 768            # D (d_model)
    num_hidden_layers: int = 32
    state_size: int = 16              # N
    conv_kernel: int = 4              # K
    expand: int = 2
    time_step_rank: int = 0           # R; 0 here means "auto" until __post_init__ fixes it
    use_bias: bool = False            # bias on in_proj and out_proj
    use_conv_bias: bool = True
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    pad_vocab_size_multiple: int = 8  # mamba_ssm's default; vocab_size is stored padded
    residual_in_fp32: bool = True
    hidden_act: str = "silu"
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    time_step_init_scheme: str = "random"
    time_step_scale: float = 1.0
    rescale_prenorm_residual: bool = False
    initializer_range: float = 0.1
    mixer_rms_eps: float = 1e-6       # falcon_mamba only
    num_heads: int = 0                # mamba2: H (0 = expand * hidden_size // head_dim)
    head_dim: int = 64                # mamba2: P
    n_groups: int = 1                 # mamba2: G (B/C groups; the gated norm's groups)
    chunk_size: int = 256             # mamba2: SSD chunk length
    time_step_limit: tuple = (0.0, float("inf"))   # mamba2: dt clamp after softplus
    attention_heads: int = 0          # attention: query heads H
    attention_kv_heads: int = 0       # attention: key/value heads (GQA)
    attention_head_dim: int = 0       # attention: Dh
    max_position_embeddings: int = 4096   # attention: default KV-cache length
    attention_rope: bool = False      # attention: rotary position embedding on q, k (not NemotronH)
    rope_theta: float = 10000.0       # attention: RoPE base
    partial_rotary_factor: float = 1.0    # attention: rotate int(head_dim * this) (even) channels
    attention_qkv_bias: bool = False  # attention: biases on q, k, v (mamba_ssm MHA qkv_proj_bias)
    attention_out_bias: bool = False  # attention: bias on the output projection (out_proj_bias)
    mlp_intermediate_size: int = 0    # mlp: F
    mlp_hidden_act: str = "relu2"     # mlp: relu2 (NemotronH)
    mlp_bias: bool = False            # mlp / gated_mlp: biases on both projections
    rope_fraction: float = 0.5        # mamba3: share of d_state rotated (0.5 or 1.0)
    A_floor: float = 1e-4             # mamba3: A <= -A_floor
    is_outproj_norm: bool = False     # mamba3: per-head RMSNorm before the silu(z) gate
    a_heavy_tail: bool = True         # mamba3: A activation heavy-tail (False: softplus, pre-#962)
    is_mimo: bool = False             # mamba3: MIMO (rank mimo_rank) instead of SISO
    mimo_rank: int = 4                # mamba3: MIMO rank R (mamba_ssm's default; unused for SISO)
    layers: list = field(default_factory=list)   # schedule, e.g. ["mamba1"] * n_layers
    # logical -> physical layer index (empty: one logical layer per physical one), and the
    # bidirectional layers' options; config.json keys mambaweb_virtual_layers /
    # mambaweb_bidirectional (py_engine/models/schedule.py)
    virtual_layers: list = field(default_factory=list)
    bidirectional: dict = field(default_factory=dict)
    # "mamba_ssm": a MambaLMHeadModel hybrid (attn_layer_idx / d_intermediate): its config.json,
    # its tensor names (py_engine/io/mamba_ssm_hybrid.py), fused attention in_proj/out_proj
    checkpoint_layout: str = "hf"
    extra: dict = field(default_factory=dict)    # unmodelled config.json keys, kept verbatim

    def __post_init__(self):
        schedule.adopt_keys(self)       # our config.json keys arrive in `extra`
        # Sizes are checked before anything is derived from them: a string would fail in
        # arithmetic with a message naming no field, and a schedule of 10^9 layers would be
        # built as a list before validate() could refuse it.
        _check_sizes(self)
        if self.time_step_rank in (0, "auto", None):
            self.time_step_rank = math.ceil(self.hidden_size / 16)
        if not self.layers:
            self.layers = [DEFAULT_KIND.get(self.model_type, "mamba1")] * self.num_hidden_layers
        if self.model_type in ("mamba2", "nemotron_h", "mamba3") and not self.num_heads:
            self.num_heads = int(self.expand * self.hidden_size) // max(int(self.head_dim), 1)
        self.time_step_limit = tuple(_json_float(v) for v in self.time_step_limit)
        self.validate()

    # --- derived sizes -----------------------------------------------------
    @property
    def d_model(self):
        return self.hidden_size

    @property
    def intermediate_size(self):      # I of Mamba-1/2 mixers (not an MLP's: mlp_intermediate_size)
        return int(self.expand * self.hidden_size)

    @property
    def is_falcon(self):
        return self.model_type == "falcon_mamba"

    @property
    def architecture(self):
        return SUPPORTED_MODEL_TYPES[self.model_type]

    def validate(self, source="config"):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(_unsupported(source, "model_type", self.model_type))
        ints = ("vocab_size", "hidden_size", "num_hidden_layers", "state_size",
                "conv_kernel", "time_step_rank")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
        if self.intermediate_size <= 0:
            raise ValueError(f"{source}: expand * hidden_size must be positive, got "
                             f"{self.expand} * {self.hidden_size}")
        if self.hidden_act != "silu":
            raise ValueError(f"{source}: hidden_act {self.hidden_act!r} is not supported; "
                             "Mamba mixers here use 'silu'")
        if self.time_step_init_scheme not in ("random", "constant"):
            raise ValueError(f"{source}: time_step_init_scheme {self.time_step_init_scheme!r} "
                             "is not one of 'random', 'constant'")
        if len(self.layers) != self.num_hidden_layers:
            raise ValueError(f"{source}: layer schedule has {len(self.layers)} entries but "
                             f"num_hidden_layers is {self.num_hidden_layers}")
        for i, kind in enumerate(self.layers):
            if kind not in LAYER_TYPES:
                raise ValueError(f"{source}: layer {i} type {kind!r} is unknown; "
                                 f"known types: {', '.join(LAYER_TYPES)}")
        schedule.check(self, source, MAX_LAYERS)
        from py_engine.nn import registry
        for kind in sorted(set(self.layers)):
            if registry.has(kind):
                registry.get(kind).validate(self, source)
        _check_parameter_count(self, source)

    def parameter_count(self):
        """(total, {part: numel}) of the weights this config describes, from shapes alone
        (nothing is allocated): embedding, each layer kind's layers, final norm, LM head."""
        from py_engine.nn import registry
        parts = {"embedding": self.vocab_size * self.hidden_size}
        for kind in sorted(set(self.layers)):
            if not registry.has(kind):
                continue
            per_layer = self.hidden_size + sum(_numel(s) for s in
                                               registry.get(kind).tensors(self).values())
            parts[f"{self.layers.count(kind)} {kind} layers"] = (
                self.layers.count(kind) * per_layer)
        parts["final norm"] = self.hidden_size
        if not self.tie_word_embeddings:
            parts["lm_head"] = self.vocab_size * self.hidden_size
        return sum(parts.values()), parts

    # --- HF config.json ----------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d, source="config.json"):
        """Build from a parsed config.json. `source` names the file in error messages."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type")
        archs = d.get("architectures") or []
        if model_type is None:
            if "d_model" in d and "n_layer" in d:
                return cls.from_mamba_ssm_dict(d, source)
            raise ValueError(_unsupported(source, "model_type", None))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(_unsupported(source, "model_type", model_type))
        if model_type == "nemotron_h":
            return cls._from_nemotron_h(d, source)
        want = SUPPORTED_MODEL_TYPES[model_type]
        for arch in archs:
            if arch != want:
                raise ValueError(
                    f"{source}: architectures lists {arch!r}, which is not supported for "
                    f"model_type {model_type!r}; supported: {want}")
        names = {f.name for f in fields(cls)} - {"layers", "extra", "time_step_rank"}
        kwargs = dict(_TYPE_DEFAULTS.get(model_type, {}))
        kwargs.update({k: d[k] for k in names if k in d})
        kwargs["model_type"] = model_type
        kwargs["time_step_rank"] = d.get("time_step_rank", "auto")
        kwargs["layers"] = list(d.get("layers") or [])
        kwargs["extra"] = {k: v for k, v in d.items()
                           if k not in names and k not in _DERIVED_OR_OURS
                           and k != "time_step_rank"}
        return _build(cls, kwargs, source)

    def to_hf_dict(self, json_safe=True):
        """A config.json dict that transformers' from_pretrained accepts. json_safe: write a
        non-finite float as transformers 5.x does, {"__float__": "Infinity"} (plain JSON, which
        JS can parse too); False keeps Python floats (to build a transformers config object).
        A virtual schedule or bidirectional options add our own keys (models/schedule.py)."""
        d = self._hf_dict(json_safe)
        d.update(schedule.our_keys(self))
        return d

    def _hf_dict(self, json_safe):
        if self.checkpoint_layout == "mamba_ssm":
            from py_engine.models.mamba_ssm_config import to_mamba_ssm_hybrid_dict
            return to_mamba_ssm_hybrid_dict(self)
        if self.model_type == "nemotron_h":
            return self._to_nemotron_h_dict(json_safe)
        if self.model_type == "mamba3":
            return self._to_mamba_ssm_dict()
        d = dict(self.extra)
        d.update({
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "state_size": self.state_size,
            "conv_kernel": self.conv_kernel,
            "expand": self.expand,
            "intermediate_size": self.intermediate_size,
            "time_step_rank": self.time_step_rank,
            "use_bias": self.use_bias,
            "use_conv_bias": self.use_conv_bias,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tie_word_embeddings": self.tie_word_embeddings,
            "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
            "residual_in_fp32": self.residual_in_fp32,
            "hidden_act": self.hidden_act,
            "time_step_min": self.time_step_min,
            "time_step_max": self.time_step_max,
            "time_step_floor": self.time_step_floor,
            "time_step_init_scheme": self.time_step_init_scheme,
            "time_step_scale": self.time_step_scale,
            "rescale_prenorm_residual": self.rescale_prenorm_residual,
            "initializer_range": self.initializer_range,
        })
        if self.is_falcon:
            d["mixer_rms_eps"] = self.mixer_rms_eps
        if self.model_type == "mamba2":
            for k in ("num_heads", "head_dim", "n_groups", "chunk_size"):
                d[k] = getattr(self, k)
            # inf is not JSON: written as transformers 5.x writes it
            d["time_step_limit"] = [v if math.isfinite(v) or not json_safe
                                    else {"__float__": "Infinity" if v > 0 else "-Infinity"}
                                    for v in self.time_step_limit]
            del d["intermediate_size"]     # Mamba2Config has no such field (derived)
        # transformers has no per-layer schedule for these model types: only write ours
        # when it says something beyond the model_type's one kind.
        default = DEFAULT_KIND.get(self.model_type, "mamba1")
        if any(kind != default for kind in self.layers):
            d["layers"] = list(self.layers)
            d.update(self._layer_kind_keys())
        return d

    # Our config.json keys of the attention / MLP kinds in a schedule written with our names
    # (a gated-MLP hybrid that is neither NemotronH nor mamba_ssm: py_engine/train/init.py
    # hybrid_layout); from_hf_dict reads them back as the fields of the same names.
    _KIND_KEYS = {"attention": ("attention_heads", "attention_kv_heads", "attention_head_dim",
                                "max_position_embeddings", "attention_rope", "rope_theta",
                                "partial_rotary_factor", "attention_qkv_bias",
                                "attention_out_bias"),
                  "mlp": ("mlp_intermediate_size", "mlp_hidden_act", "mlp_bias"),
                  "gated_mlp": ("mlp_intermediate_size", "mlp_bias")}

    def _layer_kind_keys(self):
        return {k: getattr(self, k) for kind in sorted(set(self.layers))
                for k in self._KIND_KEYS.get(kind, ())}

    # --- NemotronH (transformers' NemotronHConfig) ------------------------------
    # config.json key -> (our field, transformers' default); older mamba_* spellings too.
    _NEMOTRON_KEYS = {
        "vocab_size": ("vocab_size", 131072), "hidden_size": ("hidden_size", 4096),
        "tie_word_embeddings": ("tie_word_embeddings", False),
        "num_attention_heads": ("attention_heads", 32),
        "num_key_value_heads": ("attention_kv_heads", 8), "head_dim": ("attention_head_dim", 128),
        "max_position_embeddings": ("max_position_embeddings", 4096),
        "intermediate_size": ("mlp_intermediate_size", 21504),
        "mlp_hidden_act": ("mlp_hidden_act", "relu2"), "mlp_bias": ("mlp_bias", False),
        "ssm_state_size": ("state_size", 128), "mamba_num_heads": ("num_heads", 128),
        "mamba_head_dim": ("head_dim", 64), "n_groups": ("n_groups", 8),
        "conv_kernel": ("conv_kernel", 4), "expand": ("expand", 2),
        "time_step_min": ("time_step_min", 0.001), "time_step_max": ("time_step_max", 0.1),
        "time_step_limit": ("time_step_limit", (0.0, float("inf"))),
        "time_step_floor": ("time_step_floor", 1e-4), "use_conv_bias": ("use_conv_bias", True),
        "chunk_size": ("chunk_size", 128), "use_bias": ("use_bias", False),
        "initializer_range": ("initializer_range", 0.02),
        "layer_norm_epsilon": ("layer_norm_epsilon", 1e-5),
        "residual_in_fp32": ("residual_in_fp32", False),
        "rescale_prenorm_residual": ("rescale_prenorm_residual", True),
        "mamba_hidden_act": ("hidden_act", "silu"),
    }
    _NEMOTRON_OLD = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel",
                     "mamba_expand": "expand", "mamba_dt_min": "time_step_min",
                     "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit",
                     "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias",
                     "mamba_chunk_size": "chunk_size"}

    @classmethod
    def _from_nemotron_h(cls, d, source):
        """transformers' NemotronHConfig dict -> a schedule of mamba2 / attention / mlp layers.
        Its Mamba-2 mixers are H = mamba_num_heads heads of mamba_head_dim (expand unused)."""
        d = dict(d)
        for old, new in cls._NEMOTRON_OLD.items():
            if old in d:
                d.setdefault(next(k for k, (f, _) in cls._NEMOTRON_KEYS.items() if f == new),
                             d.pop(old))
        kinds = d.get("layers_block_type") or d.get("layer_types")
        pattern = d.get("hybrid_override_pattern")
        if not kinds and pattern:
            kinds = list(pattern)
        if not kinds:
            raise ValueError(f"{source}: NemotronH config has neither layers_block_type nor "
                             "hybrid_override_pattern")
        layers = []
        for i, k in enumerate(kinds):
            if k in ("moe", "E"):
                raise ValueError(f"{source}: layer {i} is a mixture-of-experts block ('{k}'); "
                                 "MoE layers are not supported yet")
            if k not in NEMOTRON_KINDS:
                raise ValueError(f"{source}: layer {i} block type {k!r} is unknown; known: "
                                 + ", ".join(sorted(NEMOTRON_KINDS)))
            layers.append(NEMOTRON_KINDS[k])
        kwargs = {f: d.get(key, default) for key, (f, default) in cls._NEMOTRON_KEYS.items()}
        kwargs.update(model_type="nemotron_h", num_hidden_layers=len(layers), layers=layers)
        rope = ("attention_rope", "rope_theta", "partial_rotary_factor")
        kwargs.update({k: d[k] for k in rope if k in d})
        used = set(cls._NEMOTRON_KEYS) | set(rope) | {"layers_block_type", "layer_types",
                                                      "hybrid_override_pattern", "num_hidden_layers"}
        kwargs["extra"] = {k: v for k, v in d.items() if k not in used
                           and k not in _DERIVED_OR_OURS}
        return _build(cls, kwargs, source)

    def _to_nemotron_h_dict(self, json_safe):
        d = dict(self.extra)
        d.update({"architectures": [self.architecture], "model_type": "nemotron_h",
                  "num_hidden_layers": self.num_hidden_layers,
                  "layers_block_type": [NEMOTRON_NAMES[k] for k in self.layers]})
        for key, (f, _) in self._NEMOTRON_KEYS.items():
            v = getattr(self, f)
            if f == "time_step_limit":
                v = [x if math.isfinite(x) or not json_safe
                     else {"__float__": "Infinity" if x > 0 else "-Infinity"} for x in v]
            d[key] = v
        if self.attention_rope:
            # not a NemotronHConfig key (transformers' NemotronH has no RoPE): our engine reads
            # it back; transformers would ignore it (README)
            d.update(attention_rope=True, rope_theta=self.rope_theta,
                     partial_rotary_factor=self.partial_rotary_factor)
        return d

    def _to_mamba_ssm_dict(self):
        """mamba_ssm's MambaLMHeadModel config.json (Mamba-3 has no transformers class)."""
        d = {k: v for k, v in self.extra.items() if not k.startswith("_")}
        ssm = dict(self.extra.get("_ssm_cfg") or {})
        ssm.update({"layer": "Mamba3", "d_state": self.state_size, "expand": self.expand,
                    "headdim": self.head_dim, "ngroups": self.n_groups,
                    "rope_fraction": self.rope_fraction, "A_floor": self.A_floor,
                    "is_outproj_norm": self.is_outproj_norm, "chunk_size": self.chunk_size})
        if self.is_mimo:
            ssm.update(is_mimo=True, mimo_rank=self.mimo_rank)
        if not self.a_heavy_tail:
            ssm["A_activation"] = "softplus"    # ours: mamba_ssm itself has no such argument
        d.update({"d_model": self.hidden_size, "n_layer": self.num_hidden_layers,
                  "vocab_size": self.vocab_size, "ssm_cfg": ssm, "d_intermediate": 0,
                  "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
                  "residual_in_fp32": self.residual_in_fp32, "fused_add_norm": True,
                  "pad_vocab_size_multiple": self.pad_vocab_size_multiple,
                  "tie_embeddings": self.tie_word_embeddings})
        return d

    # --- mamba_ssm's config.json (MambaLMHeadModel) ---------------------------
    @classmethod
    def from_mamba_ssm_dict(cls, d, source="config.json"):
        """A config from state-spaces/mamba's `MambaConfig` dict (d_model, n_layer, ssm_cfg...).

        Mamba-1 (`ssm_cfg.layer` "Mamba1" or absent) maps to model_type "mamba", "Mamba2" to
        "mamba2", "Mamba3" to "mamba3", with mamba_ssm's defaults for keys the file leaves out.
        Attention layers (`attn_layer_idx` + `attn_cfg`) and the gated MLP after every mixer
        (`d_intermediate` > 0) make a hybrid schedule (py_engine/models/mamba_ssm_config.py)."""
        from py_engine.models.mamba_ssm_config import hybrid_fields
        ssm = dict(d.get("ssm_cfg") or {})
        layer = ssm.pop("layer", "Mamba1")
        # attention layers (attn_layer_idx + attn_cfg) and the gated MLP after every mixer
        # (d_intermediate): the schedule and sizes, {} for a pure Mamba model
        kind = {"Mamba1": "mamba1", "Mamba2": "mamba2", "Mamba3": "mamba3"}.get(layer)
        hybrid = hybrid_fields(d, kind, source)
        hybrid = dict(hybrid, **{k: d[k] for k in schedule.OUR_KEYS if k in d})
        if d.get(schedule.BIDI_KEY) and kind and "layers" not in hybrid:
            # mamba_ssm's config.json names no per-layer kinds: our bidirectional key makes
            # every layer its family's bidirectional wrapper, as schedule.apply_options does
            hybrid["layers"] = ["bidi_" + kind] * int(d["n_layer"])
        if not d.get("rms_norm", True):
            raise ValueError(f"{source}: rms_norm false (LayerNorm blocks) is not supported")
        vocab, mult = int(d["vocab_size"]), int(d.get("pad_vocab_size_multiple", 8))
        if vocab % mult:
            vocab += mult - vocab % mult        # MambaLMHeadModel pads the vocabulary
        common = {"hidden_size": int(d["d_model"]), "num_hidden_layers": int(d["n_layer"]),
                  "vocab_size": vocab, "pad_vocab_size_multiple": mult,
                  "tie_word_embeddings": bool(d.get("tie_embeddings", True)),
                  "residual_in_fp32": bool(d.get("residual_in_fp32", True)),
                  "layer_norm_epsilon": 1e-5}
        if layer == "Mamba1":
            hf = dict(common, model_type="mamba", state_size=ssm.get("d_state", 16),
                      conv_kernel=ssm.get("d_conv", 4), expand=ssm.get("expand", 2),
                      time_step_rank=ssm.get("dt_rank", "auto"),
                      use_conv_bias=ssm.get("conv_bias", True), use_bias=ssm.get("bias", False))
        elif layer == "Mamba2":
            if ssm.get("rmsnorm", True) is not True or ssm.get("norm_before_gate", False):
                raise ValueError(f"{source}: Mamba2 with rmsnorm false or norm_before_gate true "
                                 "is not supported")
            if ssm.get("D_has_hdim", False):
                raise ValueError(f"{source}: Mamba2 with D_has_hdim true is not supported")
            hf = dict(common, model_type="mamba2", state_size=ssm.get("d_state", 128),
                      conv_kernel=ssm.get("d_conv", 4), expand=ssm.get("expand", 2),
                      head_dim=ssm.get("headdim", 64), n_groups=ssm.get("ngroups", 1),
                      chunk_size=ssm.get("chunk_size", 256),
                      time_step_limit=list(ssm.get("dt_limit", (0.0, float("inf")))),
                      use_conv_bias=ssm.get("conv_bias", True), use_bias=ssm.get("bias", False))
            hf["num_heads"] = int(hf["expand"] * hf["hidden_size"]) // int(hf["head_dim"])
        elif layer == "Mamba3":
            act = ssm.get("A_activation", "heavy_tail")
            if act not in ("heavy_tail", "softplus"):
                raise ValueError(f"{source}: ssm_cfg.A_activation {act!r} is not one of "
                                 "'heavy_tail', 'softplus'")
            hf = dict(common, model_type="mamba3", state_size=ssm.get("d_state", 128),
                      expand=ssm.get("expand", 2), head_dim=ssm.get("headdim", 64),
                      n_groups=ssm.get("ngroups", 1), chunk_size=ssm.get("chunk_size", 64),
                      rope_fraction=float(ssm.get("rope_fraction", 0.5)),
                      A_floor=float(ssm.get("A_floor", 1e-4)),
                      is_outproj_norm=bool(ssm.get("is_outproj_norm", False)),
                      a_heavy_tail=(act == "heavy_tail"),
                      is_mimo=bool(ssm.get("is_mimo", False)), mimo_rank=int(ssm.get("mimo_rank", 4)))
            hf["num_heads"] = int(hf["expand"] * hf["hidden_size"]) // int(hf["head_dim"])
            if ssm.get("bias", False):
                raise ValueError(f"{source}: Mamba-3 with bias=true is not supported")
            hf.update(hybrid)
            cfg = cls.from_hf_dict(hf, source=source)
            cfg.extra.update({k: v for k, v in d.items()
                              if k not in ("d_model", "n_layer", "vocab_size", "ssm_cfg")})
            cfg.extra["_ssm_cfg"] = dict(d.get("ssm_cfg") or {})
            return cfg
        else:
            raise ValueError(f"{source}: ssm_cfg.layer {layer!r} is not supported; "
                             "supported: 'Mamba1', 'Mamba2', 'Mamba3'")
        hf.update(hybrid)
        cfg = cls.from_hf_dict(hf, source=source)
        return cfg


def _json_float(v):
    """A float from config.json: a number, or transformers 5.x's {"__float__": "Infinity"}
    (how it writes the non-JSON values inf/nan)."""
    if isinstance(v, dict) and set(v) == {"__float__"}:
        return float(v["__float__"])
    return float(v)


def _unsupported(source, key, value):
    supported = ", ".join(f"{t!r} ({a})" for t, a in SUPPORTED_MODEL_TYPES.items())
    return f"{source}: {key} {value!r} is not supported; supported model_type: {supported}"


# --- size checks -----------------------------------------------------------------------------
# The engine keeps every weight in float32 on one GPU (py_engine/io/hf_loader.py widens
# 16-bit checkpoints), so a model above this many parameters cannot load anywhere: 160 GB of
# float32 is more than the largest single GPU holds (an H200 has 141 GB). A config past it is
# corrupt or not meant for this engine; refusing it here happens before any allocation.
MAX_PARAMETERS = 40_000_000_000
# A bound on the schedule length, checked before the schedule list is built.
MAX_LAYERS = 65_536
# Integer sizes a config must give as positive integers (JSON numbers without a fraction).
_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "conv_kernel")
# Sizes where 0 means "derive it" or "this layer kind is absent".
_NON_NEGATIVE_INTS = ("num_heads", "head_dim", "n_groups", "chunk_size", "attention_heads",
                      "attention_kv_heads", "attention_head_dim", "max_position_embeddings",
                      "mlp_intermediate_size", "pad_vocab_size_multiple")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_sizes(cfg):
    """Refuse sizes that are not integers of a sane sign before anything is derived from them."""
    for name in _POSITIVE_INTS:
        v = getattr(cfg, name)
        if not _is_int(v) or v <= 0:
            raise ValueError(f"config: {name} must be a positive integer, got {v!r}")
    for name in _NON_NEGATIVE_INTS:
        v = getattr(cfg, name)
        if not _is_int(v) or v < 0:
            raise ValueError(f"config: {name} must be a non-negative integer, got {v!r}")
    e = cfg.expand
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0 or e != e:
        raise ValueError(f"config: expand must be a positive number, got {e!r}")
    r = cfg.time_step_rank
    if r not in (0, "auto", None) and (not _is_int(r) or r < 0):
        raise ValueError(f"config: time_step_rank must be a positive integer or \"auto\", "
                         f"got {r!r}")
    if cfg.num_hidden_layers > MAX_LAYERS:
        raise ValueError(f"config: num_hidden_layers is {cfg.num_hidden_layers:,}, above the "
                         f"{MAX_LAYERS:,} this engine accepts (the largest released Mamba "
                         "models have about a hundred): the config is corrupt")
    if not isinstance(cfg.layers, list):
        raise ValueError(f"config: layers must be a list of layer kinds, got "
                         f"{type(cfg.layers).__name__}")


def _check_parameter_count(cfg, source):
    total, parts = cfg.parameter_count()
    if total > MAX_PARAMETERS:
        biggest = ", ".join(f"{k} {v:,}" for k, v in
                            sorted(parts.items(), key=lambda kv: -kv[1])[:3])
        raise ValueError(
            f"{source}: these sizes describe {total:,} parameters ({biggest}; vocab_size "
            f"{cfg.vocab_size:,}, hidden_size {cfg.hidden_size:,}, num_hidden_layers "
            f"{cfg.num_hidden_layers:,}), {total * 4 / 1e9:,.0f} GB as float32; the engine "
            f"holds float32 weights on one GPU and refuses more than {MAX_PARAMETERS:,} "
            "parameters. Check those sizes in config.json")


def _numel(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _build(cls, kwargs, source):
    """cls(**kwargs), every error a ValueError naming `source` once."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        if msg.startswith(source):
            raise
        if msg.startswith("config: "):
            msg = msg[len("config: "):]
        raise ValueError(f"{source}: {msg}") from None
