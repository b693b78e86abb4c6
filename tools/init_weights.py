"""Random initial weights for a Mamba-1 LM, the way state-spaces/mamba initialises them.

Follows mamba_ssm (modules/mamba_simple.py Mamba.__init__ and models/mixer_seq_simple.py
_init_weights), which transformers' MambaPreTrainedModel._init_weights mirrors for the SSM
parameters:
  A_log            log(1..N) per channel (S4D-real)                             [I, N]
  D                1                                                             [I]
  dt_proj.weight   U(-s, s), s = dt_rank^-0.5 * dt_scale ("constant": s)         [I, R]
  dt_proj.bias     softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) >= floor [I]
  in/x/out_proj    PyTorch Linear default: U(+-1/sqrt(fan_in)); biases 0
  out_proj.weight  then / sqrt(n_layer) (rescale_prenorm_residual, 1 residual per layer)
  conv1d           PyTorch Conv1d default: weight and bias U(+-1/sqrt(K))  (depthwise fan_in K)
  embeddings       N(0, initializer_range); presets set it to mamba_ssm's 0.02
  norms            1
Where transformers differs (it draws Linear weights from N(0, initializer_range=0.1) and
zeroes the conv bias) we keep mamba_ssm: it is what the released checkpoints were trained from.
"""
import math

import numpy as np

from py_engine.io import hf_names
from py_engine.models.config import MambaConfig  # noqa: F401  (re-exported for callers)
from py_engine.train import init as init_presets

# One preset table for the whole project (pure Python, also used inside the browser).
PRESETS = init_presets.PRESETS
make_config = init_presets.preset_config


def param_count(cfg):
    return sum(math.prod(s) for s in hf_names.expected_tensors(cfg).values())


def init_weights(cfg, seed=0):
    """{HF tensor name: float32 array} for `cfg`, drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    D, I, N, K, R = (cfg.hidden_size, cfg.intermediate_size, cfg.state_size,
                     cfg.conv_kernel, cfg.time_step_rank)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def linear(out_f, in_f):
        return uniform((out_f, in_f), 1.0 / math.sqrt(in_f))

    std = cfg.initializer_range
    out = {hf_names.EMBED: rng.normal(0.0, std, size=(cfg.vocab_size, D)).astype(np.float32)}
    for i in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        out[p + "norm.weight"] = np.ones(D, np.float32)
        out[m + "in_proj.weight"] = linear(2 * I, D)                 # [2I, D]
        out[m + "conv1d.weight"] = uniform((I, 1, K), 1.0 / math.sqrt(K))
        if cfg.use_conv_bias:
            out[m + "conv1d.bias"] = uniform((I,), 1.0 / math.sqrt(K))
        out[m + "x_proj.weight"] = linear(R + 2 * N, I)              # [R+2N, I]
        s = R ** -0.5 * cfg.time_step_scale
        out[m + "dt_proj.weight"] = (np.full((I, R), s, np.float32)
                                     if cfg.time_step_init_scheme == "constant"
                                     else uniform((I, R), s))
        lo, hi = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
        dt = np.exp(rng.uniform(size=I) * (hi - lo) + lo)
        dt = np.maximum(dt, cfg.time_step_floor)
        # softplus^-1(dt) = dt + log(1 - exp(-dt)), computed in float64, stored f32
        out[m + "dt_proj.bias"] = (dt + np.log(-np.expm1(-dt))).astype(np.float32)
        out[m + "A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float32), (I, 1)))
        out[m + "D"] = np.ones(I, np.float32)
        w = linear(D, I)
        if cfg.rescale_prenorm_residual:
            w = w / np.float32(math.sqrt(cfg.num_hidden_layers))
        out[m + "out_proj.weight"] = w.astype(np.float32)            # [D, I]
        if cfg.use_bias:
            out[m + "in_proj.bias"] = np.zeros(2 * I, np.float32)
            out[m + "out_proj.bias"] = np.zeros(D, np.float32)
    out[hf_names.NORM_F] = np.ones(D, np.float32)
    if not cfg.tie_word_embeddings:
        # mamba_ssm ties by default; an untied head starts as the same N(0, 0.02) draw
        out[hf_names.LM_HEAD] = rng.normal(0.0, std, size=(cfg.vocab_size, D)).astype(np.float32)
    want = hf_names.expected_tensors(cfg)
    assert set(out) == set(want), sorted(set(out) ^ set(want))
    return out
