"""Random initial weights on the host: the ONE initialiser of py_engine/train/init.py, computed
with numpy.

`py_engine.train.init.plan(cfg)` says which distribution each HF tensor gets (each layer kind's
`init_rule`: state-spaces/mamba's init for Mamba-1, transformers' for Mamba-2); its
counter-based generator makes every element a function of (seed, tensor name, index). The
GPU kernels (shaders/init.wgsl, what the pretrain page and `mambaweb pretrain` use), the
pure-Python `init.draw` and `init_weights` here all evaluate that same function, so the same
seed gives the same model in `generate-bin`, the pretrain page and the CLI: uniform and
constant tensors bit-identical, the transcendental ones (normal, dt_bias, A_log) equal to f32
rounding of their log/exp/cos (tests/unit/test_generate_bin.py checks against init.draw).
"""
import math

import numpy as np

from py_engine.io import hf_names
from py_engine.models.config import MambaConfig  # noqa: F401  (re-exported for callers)
from py_engine.train import init as init_presets

# One preset table for the whole project (pure Python, also used inside the browser).
PRESETS = init_presets.PRESETS
make_config = init_presets.preset_config
M32 = np.uint64(0xFFFFFFFF)


def param_count(cfg):
    return sum(math.prod(s) for s in hf_names.expected_tensors(cfg).values())


def _mix(x):
    """init._mix on a uint64 array holding u32 values."""
    x = x & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    x ^= x >> np.uint64(16)
    return x


def _unit(key, key2, c):
    """init._unit: u in (0, 1) of counters c (uint64 array)."""
    bits = _mix(_mix((c ^ np.uint64(key)) & M32) ^ np.uint64(key2))
    return ((bits >> np.uint64(9)).astype(np.float64) * 2 + 1) / 16777216.0


def draw(cfg, name, shape, kind, a, seed, period=0):
    """float32 array of HF tensor `name`: init.draw's numbers, vectorised."""
    n = math.prod(shape)
    key = init_presets.stream_key(seed, name)
    key2 = int(_mix(np.array([key + 0x9E3779B9], np.uint64))[0])
    a = float(np.float32(a))
    lo, hi, floor = init_presets._dt_range(cfg)
    idx = np.arange(n, dtype=np.uint64)
    if kind == "const":
        out = np.full(n, a, np.float64)
    elif kind == "uniform":
        out = (2.0 * _unit(key, key2, idx) - 1.0).astype(np.float32).astype(np.float64) * a
    elif kind == "normal":
        u1, u2 = _unit(key, key2, 2 * idx), _unit(key, key2, 2 * idx + np.uint64(1))
        out = a * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    elif kind == "s4d_alog":
        out = np.log((idx % np.uint64(period)).astype(np.float64) + 1)
    elif kind == "dt_bias":
        dt = np.maximum(np.exp(lo + _unit(key, key2, idx) * (hi - lo)), floor)
        out = np.where(dt > 20.0, dt, dt + np.log(-np.expm1(-dt)))
    else:
        raise ValueError(f"unknown init kind {kind!r}")
    return out.astype(np.float32).reshape(shape)


def init_weights(cfg, seed=0):
    """{HF tensor name: float32 array} for `cfg` (any layer kinds): init.plan's distributions."""
    return {name: draw(cfg, name, shape, kind, a, seed, period)
            for name, shape, kind, a, period in init_presets.plan(cfg)}
