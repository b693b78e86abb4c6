"""Which checkpoints `train-torch` can continue, and loading them with transformers' own class.

A family goes to PyTorch only if transformers has a model class for it, because the point of
this path is to use the distributed engine people already run (DDP/FSDP over transformers'
modules), not a second implementation of ours:
  mamba         MambaForCausalLM
  falcon_mamba  FalconMambaForCausalLM
  mamba2        Mamba2ForCausalLM
  nemotron_h    NemotronHForCausalLM
Mamba-3 (mamba_ssm's layout) has no transformers class: it is refused with that reason and
stays in the tab. mamba_ssm folders of Mamba-1/2 are refused with the command that converts them.

`inspect_model_dir` reads only JSON (no torch import), so refusals are instant.
"""
import json
from dataclasses import dataclass
from pathlib import Path

CLASSES = {
    "mamba": "MambaForCausalLM",
    "falcon_mamba": "FalconMambaForCausalLM",
    "mamba2": "Mamba2ForCausalLM",
    "nemotron_h": "NemotronHForCausalLM",
}
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class ModelDir:
    path: Path
    model_type: str
    class_name: str
    config: dict          # config.json as parsed


def inspect_model_dir(path):
    """-> ModelDir, or ValueError naming the folder/field, what was found and what to do."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise ValueError(f"--model {path}: no such folder; give an HF model folder "
                         "(config.json + model.safetensors + tokenizer.json), e.g. one the "
                         "pretrain page or `mambaweb pretrain` exported")
    if not cfg_file.is_file():
        raise ValueError(f"{path}: no config.json here; an HF model folder holds config.json, "
                         "model.safetensors and tokenizer.json")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object, found {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type is None and "ssm_cfg" in cfg:
        layer = (cfg.get("ssm_cfg") or {}).get("layer", "Mamba1")
        if layer == "Mamba3":
            raise ValueError(
                f"{cfg_file}: this is a Mamba-3 model (mamba_ssm layout, ssm_cfg.layer "
                "'Mamba3'); transformers has no Mamba-3 class, so it cannot continue on "
                "PyTorch DDP/FSDP here: keep training it in the tab (the pretrain page, or "
                "`mambaweb pretrain --resume`)")
        raise ValueError(
            f"{cfg_file}: a mamba_ssm folder (ssm_cfg.layer {layer!r}, no model_type); "
            f"convert it to transformers' layout first: `mambaweb convert {path} "
            f"{path}-hf`, then add its tokenizer.json and train that folder")
    if model_type == "mamba3":
        raise ValueError(f"{cfg_file}: model_type 'mamba3' has no transformers class, so it "
                         "cannot continue on PyTorch DDP/FSDP here: keep training it in the tab")
    if cfg.get("mambaweb_bidirectional") or any(str(k).startswith("bidi_")
                                                for k in cfg.get("layers") or []):
        raise ValueError(f"{cfg_file}: this model has bidirectional layers, which transformers "
                         "has no class for, so it cannot continue on PyTorch here: keep "
                         "training it in the tab")
    if cfg.get("mambaweb_virtual_layers"):
        raise ValueError(f"{cfg_file}: this model shares layers (mambaweb_virtual_layers), "
                         "which transformers cannot express; unroll it first: `mambaweb unroll "
                         f"{path} {path}-unrolled`, then train that folder")
    if model_type not in CLASSES:
        raise ValueError(f"{cfg_file}: model_type {model_type!r} is not one train-torch can "
                         f"load; supported: {', '.join(sorted(CLASSES))} (the families "
                         "transformers has classes for)")
    return ModelDir(path, model_type, CLASSES[model_type], cfg)


def tokenizer_text(model_dir):
    """The tokenizer.json text the tab trained with (required: ids must match the tab's)."""
    f = Path(model_dir.path) / TOKENIZER_FILE
    if not f.is_file():
        raise ValueError(f"{model_dir.path}: no {TOKENIZER_FILE}; train-torch tokenizes the "
                         "corpus exactly as the tab did, with the model's own tokenizer. The "
                         "tab's exports carry one; copy the tokenizer.json this model was "
                         "trained with into the folder")
    return f.read_text(encoding="utf-8")


def load_model(model_dir, dtype_name="f32"):
    """transformers' model for `model_dir` in float32 master weights (bf16 runs autocast).

    rescale_prenorm_residual is forced off: it is an initialisation choice, and transformers
    5.x applies it again to loaded out_proj weights when true (see
    py_engine/train/checkpoint.config_json), which would silently change a trained model."""
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    cls = getattr(transformers, model_dir.class_name, None)
    if cls is None:
        raise ValueError(f"this transformers ({transformers.__version__}) has no "
                         f"{model_dir.class_name}; upgrade transformers to train "
                         f"model_type {model_dir.model_type!r}")
    config = transformers.AutoConfig.from_pretrained(str(model_dir.path))
    if getattr(config, "rescale_prenorm_residual", False):
        config.rescale_prenorm_residual = False
    model = cls.from_pretrained(str(model_dir.path), config=config, dtype=torch.float32)
    model.config.use_cache = False
    return model


def is_tied(model):
    """True when the LM head is the embedding tensor itself (transformers 5.x does not tie
    NemotronH even when its config says so: then the two train apart)."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight
