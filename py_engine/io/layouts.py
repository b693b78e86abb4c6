"""Tensor-name layouts of checkpoint families, mapped onto the engine's one naming.

Inside the engine every model uses transformers' Mamba names (py_engine/models/names.py):
`backbone.embeddings.weight`, `backbone.layers.{i}.{norm.weight, mixer.*}`,
`backbone.norm_f.weight`, `lm_head.weight`. On disk:
  transformers Mamba/Mamba2/NemotronH  those names (NemotronH's modules say `model.` in memory;
                                       transformers renames them to `backbone.` when saving)
  mamba_ssm (MambaLMHeadModel)         backbone.embedding.weight (no s), rest the same
`internal_name` reads any of them (and `model.`-prefixed state dicts saved from memory).
transformers 5.x does not tie NemotronH's head to its embedding even when the config says so,
so an export of a tied NemotronH writes `lm_head.weight` too (`writes_tied_head`); mamba_ssm
saves it for tied models as well. Mamba-3 has no transformers class: its files keep mamba_ssm's
names (`external_name`).

mamba_ssm hybrids (cfg.checkpoint_layout "mamba_ssm", py_engine/models/mamba_ssm_config.py):
with d_intermediate > 0 every mamba_ssm Block N holds a mixer AND a gated MLP, which the engine
runs as two schedule layers 2N (mixer) and 2N+1 (gated_mlp), so names move between indices:
  backbone.layers.N.norm.weight   <->  backbone.layers.{2N}.norm.weight
  backbone.layers.N.mixer.<rel>   <->  backbone.layers.{2N}.mixer.<rel>
  backbone.layers.N.norm2.weight  <->  backbone.layers.{2N+1}.norm.weight
  backbone.layers.N.mlp.<rel>     <->  backbone.layers.{2N+1}.mixer.<rel>  (fc1, fc2)
Without d_intermediate the indices are the same. Both directions need the config (`cfg`).
"""
from py_engine.models.names import EMBED, LAYER_PREFIX

_RENAMES = {"backbone.embedding.weight": EMBED}
_EXPLICIT_TIED_HEAD = {"nemotron_h", "mamba3"}
# model types whose files use mamba_ssm's names (no transformers class exists for them)
_MAMBA_SSM_NAMES = {"mamba3"}


def _mamba_ssm(cfg):
    return cfg is not None and getattr(cfg, "checkpoint_layout", "hf") == "mamba_ssm"


def _paired(cfg):
    """True when cfg's schedule is mamba_ssm blocks of [mixer, gated_mlp]."""
    return _mamba_ssm(cfg) and "gated_mlp" in cfg.layers


def _split(name):
    """'backbone.layers.3.mlp.fc1.weight' -> (3, 'mlp.fc1.weight'), else (None, None)."""
    if not name.startswith(LAYER_PREFIX):
        return None, None
    idx, _, rest = name[len(LAYER_PREFIX):].partition(".")
    return (int(idx), rest) if idx.isdigit() else (None, None)


def internal_name(name, cfg=None):
    """A checkpoint tensor name in the engine's naming (`cfg` maps a mamba_ssm hybrid's block
    indices; without it those names pass unchanged)."""
    if name in _RENAMES:
        return _RENAMES[name]
    if name.startswith("model."):
        return "backbone." + name[len("model."):]
    if _paired(cfg):
        n, rest = _split(name)
        if n is not None:
            if rest == "norm2.weight":
                return f"{LAYER_PREFIX}{2 * n + 1}.norm.weight"
            if rest.startswith("mlp."):
                return f"{LAYER_PREFIX}{2 * n + 1}.mixer.{rest[len('mlp.'):]}"
            return f"{LAYER_PREFIX}{2 * n}.{rest}"
    return name


def external_name(model_type, name, cfg=None):
    """The engine's name as `model_type`'s files spell it (mamba_ssm: backbone.embedding; a
    mamba_ssm hybrid `cfg`: its Block names, see above)."""
    if (model_type in _MAMBA_SSM_NAMES or _mamba_ssm(cfg)) and name == EMBED:
        return "backbone.embedding.weight"
    if _paired(cfg):
        i, rest = _split(name)
        if i is not None:
            n, mlp = divmod(i, 2)
            if not mlp:
                return f"{LAYER_PREFIX}{n}.{rest}"
            if rest == "norm.weight":
                return f"{LAYER_PREFIX}{n}.norm2.weight"
            return f"{LAYER_PREFIX}{n}.mlp.{rest[len('mixer.'):]}"
    return name


def writes_tied_head(model_type, cfg=None):
    """True where the reader needs lm_head.weight in the file even for a tied model
    (transformers' NemotronH; mamba_ssm's strict load_state_dict, whose state_dict lists the
    tied head under both names)."""
    return model_type in _EXPLICIT_TIED_HEAD or _mamba_ssm(cfg)
