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
"""
from py_engine.models.names import EMBED

_RENAMES = {"backbone.embedding.weight": EMBED}
_EXPLICIT_TIED_HEAD = {"nemotron_h", "mamba3"}
# model types whose files use mamba_ssm's names (no transformers class exists for them)
_MAMBA_SSM_NAMES = {"mamba3"}


def internal_name(name):
    """A checkpoint tensor name in the engine's naming."""
    if name in _RENAMES:
        return _RENAMES[name]
    if name.startswith("model."):
        return "backbone." + name[len("model."):]
    return name


def external_name(model_type, name):
    """The engine's name as `model_type`'s files spell it (mamba_ssm: backbone.embedding)."""
    if model_type in _MAMBA_SSM_NAMES and name == EMBED:
        return "backbone.embedding.weight"
    return name


def writes_tied_head(model_type):
    """True where transformers needs lm_head.weight in the file even for a tied model."""
    return model_type in _EXPLICIT_TIED_HEAD
