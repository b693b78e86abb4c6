"""MambaConfig: the model hyper-parameters, read from / written to an HF config.json dict.

Covers transformers' `MambaForCausalLM` (model_type "mamba") and `FalconMambaForCausalLM`
("falcon_mamba", which adds a weightless RMSNorm on B, C and dt with `mixer_rms_eps`).
Defaults and derived values mirror transformers 5.23's MambaConfig.__post_init__ so that a
config.json missing a key means here what it means there:
  intermediate_size = int(expand * hidden_size)   (HF ignores any stored intermediate_size)
  time_step_rank    = ceil(hidden_size / 16) when "auto"

Pure stdlib: this module is imported inside Pyodide.
"""
import math
from dataclasses import dataclass, field, fields

# model_type -> the architecture class name transformers registers for it.
SUPPORTED_MODEL_TYPES = {
    "mamba": "MambaForCausalLM",
    "falcon_mamba": "FalconMambaForCausalLM",
}
# Layer kinds the schedule may name. Only "mamba1" has an implementation behind it today;
# the others are reserved so a schedule can be written down before the mixer exists.
LAYER_TYPES = ("mamba1", "mamba2", "mamba3", "attention")

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
    layers: list = field(default_factory=list)   # schedule, e.g. ["mamba1"] * n_layers
    extra: dict = field(default_factory=dict)    # unmodelled config.json keys, kept verbatim

    def __post_init__(self):
        if self.time_step_rank in (0, "auto", None):
            self.time_step_rank = math.ceil(self.hidden_size / 16)
        if not self.layers:
            self.layers = ["mamba1"] * self.num_hidden_layers
        self.validate()

    # --- derived sizes -----------------------------------------------------
    @property
    def d_model(self):
        return self.hidden_size

    @property
    def intermediate_size(self):      # I
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
                raise ValueError(
                    f"{source}: this is a state-spaces/mamba (mamba_ssm) config without "
                    "model_type; use the transformers-format repo (e.g. "
                    "state-spaces/mamba-130m-hf), supported model_type: "
                    + ", ".join(SUPPORTED_MODEL_TYPES))
            raise ValueError(_unsupported(source, "model_type", None))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(_unsupported(source, "model_type", model_type))
        want = SUPPORTED_MODEL_TYPES[model_type]
        for arch in archs:
            if arch != want:
                raise ValueError(
                    f"{source}: architectures lists {arch!r}, which is not supported for "
                    f"model_type {model_type!r}; supported: {want}")
        names = {f.name for f in fields(cls)} - {"layers", "extra", "time_step_rank"}
        kwargs = {k: d[k] for k in names if k in d}
        kwargs["model_type"] = model_type
        kwargs["time_step_rank"] = d.get("time_step_rank", "auto")
        kwargs["layers"] = list(d.get("layers") or [])
        kwargs["extra"] = {k: v for k, v in d.items()
                           if k not in names and k not in _DERIVED_OR_OURS
                           and k != "time_step_rank"}
        try:
            cfg = cls(**kwargs)
        except (TypeError, ValueError) as e:
            if str(e).startswith(source):
                raise
            raise ValueError(f"{source}: {e}") from None
        return cfg

    def to_hf_dict(self):
        """A config.json dict that transformers' from_pretrained accepts."""
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
        # transformers has no per-layer schedule for these model types: only write ours
        # when it says something beyond "all mamba1".
        if any(kind != "mamba1" for kind in self.layers):
            d["layers"] = list(self.layers)
        return d


def _unsupported(source, key, value):
    supported = ", ".join(f"{t!r} ({a})" for t, a in SUPPORTED_MODEL_TYPES.items())
    return f"{source}: {key} {value!r} is not supported; supported model_type: {supported}"
