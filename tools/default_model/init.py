"""Step 3: a fresh HF checkpoint of the default model's shape, drawn by our one initialiser
(py_engine/train/init.plan via tools/init_weights.py, what `mambaweb generate-bin` writes),
with the step-2 tokenizer.json beside it, so `mambaweb train-torch --model OUT` continues it.

The default shape (DEFAULT_SHAPE): Mamba-2 (transformers' Mamba2ForCausalLM; its torch path
is chunked, so it trains on a GPU without mamba_ssm kernels), d_model 256, 8 layers, expand 2
(inner 512), head_dim 64 (8 heads), one B/C group, d_state 128 (the released mamba2-*
checkpoints' value), conv 4, tied head, vocab = the tokenizer's (4096): 4.77M parameters,
19.1 MB as f32 (under the 25 MB the repo allows, so the weights stay f32).
"""
import json
from pathlib import Path

from py_engine.train.data import tokenizer_from_json

DEFAULT_SHAPE = {"family": "mamba2", "d_model": 256, "n_layers": 8, "d_state": 128,
                 "head_dim": 64, "n_groups": 1, "expand": 2, "d_conv": 4}
# The size preset whose other fields (initializer range, chunk size, ...) the shape starts from.
BASE_PRESET = "micro"


def tokenizer_vocab(tokenizer_file):
    """(tokenizer.json text, its vocabulary size) — refusing a file our engine cannot load."""
    path = Path(tokenizer_file)
    if not path.is_file():
        raise ValueError(f"--tokenizer {path}: no such file; give the tokenizer.json the "
                         "'tokenizer' step wrote")
    text = path.read_text(encoding="utf-8")
    return text, tokenizer_from_json(text, str(path)).vocab_size


def make(out, tokenizer_file, shape=None, seed=0):
    """Write OUT/config.json, OUT/model.safetensors (f32), OUT/tokenizer.json.

    Returns {"params", "vocab_size", "config": the config.json dict}."""
    from tools import convert_host
    from tools.init_weights import init_weights, make_config, param_count
    s = dict(DEFAULT_SHAPE, **{k: v for k, v in (shape or {}).items() if v is not None})
    tok_text, vocab = tokenizer_vocab(tokenizer_file)
    cfg = make_config(BASE_PRESET, family=s["family"], hidden_size=s["d_model"],
                      num_hidden_layers=s["n_layers"], state_size=s["d_state"],
                      head_dim=s["head_dim"], n_groups=s["n_groups"], expand=s["expand"],
                      conv_kernel=s["d_conv"], vocab_size=vocab, tie_word_embeddings=True)
    if cfg.model_type in ("mamba2", "nemotron_h") and cfg.head_dim != s["head_dim"]:
        raise ValueError(f"--head-dim {s['head_dim']} does not divide the inner size "
                         f"{cfg.intermediate_size} into at least 2 heads; pick a head_dim that "
                         "does (e.g. 64 with d_model 256, expand 2)")
    weights = init_weights(cfg, seed)
    # out_proj is already scaled by 1/sqrt(n_layer) in the weights; config.json must say
    # false or transformers 5.x scales it again on from_pretrained (cmd_generate_bin's rule).
    cfg.rescale_prenorm_residual = False
    out = Path(out)
    convert_host.write_hf(str(out), cfg, weights, "F32")
    (out / "tokenizer.json").write_text(tok_text, encoding="utf-8")
    conf = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return {"params": param_count(cfg), "vocab_size": cfg.vocab_size, "config": conf}
