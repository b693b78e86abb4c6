"""Reference initialisation of a fresh Mamba-1 model, on the GPU (shaders/init.wgsl) or in
pure Python (the same numbers, for hosts without a GPU and for checking the kernels).

The distributions are those of tools/init_weights.py (state-spaces/mamba's init, which
`mambaweb generate-bin` writes):
  embeddings / lm_head  N(0, initializer_range)
  in_proj, x_proj       U(+-1/sqrt(fan_in));  out_proj the same / sqrt(n_layer) when
                        rescale_prenorm_residual
  conv1d weight, bias   U(+-1/sqrt(K))
  dt_proj.weight        U(+-R^-0.5 * dt_scale)  ("constant" scheme: that value)
  dt_proj.bias          softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)), floored
  A_log                 log(1..N) per channel (S4D-real);  D = 1;  norms = 1;  biases 0
The values differ from numpy's generator: ours is counter-based (see init.wgsl), so every
tensor, and every row piece of a split tensor, is drawn independently and in parallel; a
tensor's values depend only on (seed, tensor name, element index).

Pure stdlib: this module is imported inside Pyodide.
"""
import math
import struct
import zlib
from array import array

from py_engine.io import gpu_layout, hf_names

# The one table of size presets (the pretrain page, `mambaweb pretrain` and `generate-bin`):
# nano/micro/small ~1M, ~5M, ~20M parameters at these vocabs, sized for in-browser training;
# "tiny" (~0.1M, byte vocabulary) for quick tries and tests on slow GPUs; "base" is the
# mamba-130m shape (GPT-NeoX vocab padded to 50280).
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, vocab_size=256),
    "nano": dict(hidden_size=128, num_hidden_layers=4, vocab_size=4096),
    "micro": dict(hidden_size=256, num_hidden_layers=8, vocab_size=6144),
    "small": dict(hidden_size=512, num_hidden_layers=8, vocab_size=12288),
    "base": dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280),
}


# Per family: the model_type and the layer sizes a preset adds to its (D, L, V). Mamba-2's are
# the released mamba2-* checkpoints' (d_state 128, head_dim 64, one group), with the head
# size shrunk for the small presets so a preset always has at least 2 heads.
FAMILIES = {
    "mamba1": dict(model_type="mamba", state_size=16, conv_kernel=4, expand=2),
    "mamba2": dict(model_type="mamba2", state_size=128, conv_kernel=4, expand=2, head_dim=64,
                   n_groups=1, chunk_size=256),
    # Mamba-3 SISO (mamba_ssm layout): d_state 128, head_dim 64, half the state rotated
    "mamba3": dict(model_type="mamba3", state_size=128, expand=2, head_dim=64, n_groups=1,
                   chunk_size=64, rope_fraction=0.5),
    # NemotronH-style hybrid: a pattern of M (Mamba-2), * (attention), - (relu^2 MLP) layers;
    # a + (gated SwiGLU MLP) anywhere makes it a mamba_ssm / our-names hybrid (hybrid_layout)
    "hybrid": dict(model_type="nemotron_h", state_size=128, conv_kernel=4, expand=2,
                   head_dim=64, n_groups=1, chunk_size=256, tie_word_embeddings=False),
}
DEFAULT_PATTERN = "MM*M"     # the seeds' schedule: every 4th layer attention, Mamba-2 elsewhere
# A hybrid pattern's letters: one layer each.
PATTERN_LETTERS = {"M": "mamba2", "*": "attention", "-": "mlp", "+": "gated_mlp"}
GATED_MLP_MULTIPLE = 128     # mamba_ssm's GatedMLP rounds its hidden size up to this


def hybrid_layout(pattern):
    """(model_type, checkpoint_layout) a hybrid pattern is saved as:
      no +                          NemotronH (transformers' NemotronHForCausalLM)
      (M+|*+)... (a gated MLP after  mamba_ssm's MambaLMHeadModel: d_intermediate > 0 puts a
      every mixer, no -)            GatedMLP after every mixer, attn_layer_idx the * blocks
      any other pattern with +      our HF-style names (model_type mamba2 + config.json `layers`
                                    and the attention/MLP sizes): this engine reads it back,
                                    transformers and mamba_ssm have no class for it
    NemotronH has no gated MLP, and mamba_ssm pairs every mixer with one, hence the three."""
    if "+" not in pattern:
        return "nemotron_h", "hf"
    pairs = len(pattern) % 2 == 0 and set(pattern[1::2]) == {"+"} and set(pattern[0::2]) <= set("M*")
    return "mamba2", ("mamba_ssm" if pairs else "hf")


def preset_config(size="nano", family="mamba1", pattern=None, virtual=None, bidi=None,
                  **overrides):
    """A MambaConfig from a preset and a family ("mamba1", "mamba2", "hybrid"), explicit
    dimensions (not None) overriding it. A hybrid's `pattern` says each layer's kind (M Mamba-2,
    * attention, - relu^2 MLP, + gated SwiGLU MLP; default the preset's depth in repeats of
    DEFAULT_PATTERN; hybrid_layout says which checkpoint layout it gets). `virtual`
    (a schedule over the physical layers, e.g. "8:cyclic") and `bidi` ("mean"/"concat") are
    options of the schedule, not of a family (py_engine/models/schedule.apply_options)."""
    from py_engine.models.config import MambaConfig
    if size not in PRESETS:
        raise ValueError(f"unknown size {size!r}; presets: {', '.join(PRESETS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    kw = dict(PRESETS[size], **FAMILIES[family], rescale_prenorm_residual=True,
              initializer_range=0.02)
    if family == "hybrid":
        L = overrides.get("num_hidden_layers") or kw["num_hidden_layers"]
        pattern = pattern or (DEFAULT_PATTERN * L)[:L]
        bad = sorted(set(pattern) - set(PATTERN_LETTERS))
        if bad:
            raise ValueError(f"pattern {pattern!r}: unknown layer letters {bad}; use M (Mamba-2), "
                             "* (attention), - (relu^2 MLP), + (gated SwiGLU MLP)")
        D = overrides.get("hidden_size") or kw["hidden_size"]
        heads = max(2, D // 64)
        model_type, layout = hybrid_layout(pattern)
        F = 4 * D
        if "+" in pattern:      # mamba_ssm's GatedMLP size rule, kept for our names too
            F = -(-F // GATED_MLP_MULTIPLE) * GATED_MLP_MULTIPLE
        kw.update(num_hidden_layers=len(pattern), attention_heads=heads,
                  attention_kv_heads=max(1, heads // 2), attention_head_dim=D // heads,
                  mlp_intermediate_size=F, max_position_embeddings=4096,
                  model_type=model_type, checkpoint_layout=layout)
        kw["layers"] = [PATTERN_LETTERS[c] for c in pattern]
        overrides = {k: v for k, v in overrides.items() if k != "num_hidden_layers"}
    elif pattern:
        raise ValueError("a layer pattern needs the hybrid family")
    if family in ("mamba2", "hybrid", "mamba3"):
        if size in ("tiny", "nano"):
            kw.update(state_size=32, head_dim=32)
        D = overrides.get("hidden_size") or kw["hidden_size"]
        inner = int((overrides.get("expand") or kw["expand"]) * D)
        P = overrides.get("head_dim") or kw["head_dim"]
        while inner % P or inner // P < 2:
            P //= 2
        kw["head_dim"] = max(P, 1)
        kw["num_heads"] = inner // kw["head_dim"]
    R = overrides.get("mimo_rank")
    if R:          # Mamba-3 MIMO of rank R; mamba_ssm's chunk is 64 / R tokens
        if family != "mamba3":
            raise ValueError(f"mimo_rank {R} is a Mamba-3 option; use the mamba3 family")
        kw.update(is_mimo=True, chunk_size=max(1, 64 // int(R)))
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if virtual or bidi:
        from py_engine.models.schedule import apply_options
        apply_options(kw, virtual=virtual, bidi=bidi)
    mult = kw.get("pad_vocab_size_multiple", 8)
    if kw["vocab_size"] % mult:
        kw["vocab_size"] += mult - kw["vocab_size"] % mult
    return MambaConfig(**kw)


def param_count(cfg):
    return sum(math.prod(s) for s in hf_names.expected_tensors(cfg).values())


# --- the plan: which distribution each HF tensor gets --------------------------------------

def _f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def plan(cfg):
    """[(hf name, shape, distribution, a, period)]: distribution is uniform | normal | const |
    s4d_alog (log(1 + index % period)) | dt_bias. Mixer tensors follow their layer kind's
    `init_rule` (py_engine/nn/<kind>.py); embeddings and norms are the same for every kind."""
    from py_engine.nn import registry
    std = cfg.initializer_range
    out = []
    for name, shape in hf_names.expected_tensors(cfg).items():
        i, rel = hf_names.split_layer_name(name)
        if rel is not None:
            rule = registry.get(cfg.layers[i]).init_rule(cfg, rel, shape)
            out.append((name, shape) + tuple(rule))
        elif name in (hf_names.EMBED, hf_names.LM_HEAD):
            out.append((name, shape, "normal", std, 0))
        else:   # the pre-norms and the final norm
            out.append((name, shape, "const", 1.0, 0))
    return out


def stream_key(seed, name):
    """The u32 stream key of tensor `name` under `seed`."""
    return _mix((zlib.crc32(name.encode("utf-8")) ^ _mix(seed & 0xFFFFFFFF)
                 ^ ((seed >> 32) & 0xFFFFFFFF)) & 0xFFFFFFFF)


def _mix(x):
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def _dt_range(cfg):
    """(log dt_min, log dt_max, dt floor) as the f32 values the kernel receives."""
    lo = _f32(math.log(cfg.time_step_min))
    hi = _f32(math.log(cfg.time_step_max))
    return lo, hi, _f32(cfg.time_step_floor)


# --- GPU ----------------------------------------------------------------------------------

ENTRY = {"uniform": "uniform_forward", "normal": "normal_forward",
         "s4d_alog": "s4d_alog_forward", "dt_bias": "dt_bias_forward"}


def init_pieces(device, cfg, seed=0, batch=None):
    """{piece name: Tensor} of a freshly initialised model, drawn on the GPU (one dispatch
    per piece, one submit). Piece names/shapes follow py_engine.io.gpu_layout."""
    from py_engine.gpu.tensor import Tensor
    from py_engine.ops._common import fold, params
    from py_engine.ops.elementwise import fill
    check_fits(device, cfg)
    own = batch is None
    batch = batch or device.batch()
    weights = {}
    try:
        for name, shape, kind, a, period in plan(cfg):
            key = stream_key(seed, name)
            row = math.prod(shape[1:]) if len(shape) > 1 else 1
            lo, hi, floor = _dt_range(cfg)
            for piece, r0, r1, pshape in gpu_layout.pieces(cfg, name, shape):
                t = Tensor(device, pshape)
                weights[piece] = t
                if kind == "const":
                    fill(batch, t, float(a))
                    continue
                u = device.uniform(params(t.numel, r0 * row, key, period, float(a),
                                          lo, hi, floor))
                gx, gy = fold(-(-t.numel // 256))
                batch.run("init", ENTRY[kind], [u, t.binding], gx, gy)
    except BaseException:
        for t in weights.values():
            t.release()
        raise
    if own:
        batch.submit()
    return weights


def init_model(device, cfg, seed=0):
    """A MambaModel with fresh reference-initialised weights on `device`."""
    from py_engine.models.mamba import MambaModel
    return MambaModel(device, cfg, init_pieces(device, cfg, seed))


def check_fits(device, cfg):
    """Raise ValueError in plain words when a weight tensor exceeds the GPU's limits."""
    limits = device.limits
    bind = limits.get("maxStorageBufferBindingSize", 1 << 27)
    maxbuf = limits.get("maxBufferSize", 1 << 28)
    cap = min(bind, maxbuf)
    for name, shape in hf_names.expected_tensors(cfg).items():
        for piece, _, _, pshape in gpu_layout.pieces(cfg, name, shape):
            nbytes = math.prod(pshape) * 4
            if nbytes > cap:
                raise ValueError(
                    f"the model is too large for this GPU: {piece} {list(pshape)} needs "
                    f"{nbytes / 2**20:.1f} MiB but this GPU binds at most {cap / 2**20:.1f} MiB "
                    "per tensor. Choose a smaller preset, a smaller vocabulary or d_model.")


# --- pure Python (same numbers) -----------------------------------------------------------

def _unit(key, key2, c):
    bits = _mix(_mix((c ^ key) & 0xFFFFFFFF) ^ key2)
    return ((bits >> 9) * 2 + 1) / 16777216.0


def _one_minus_exp_neg(x):
    return -math.expm1(-x)


def draw(cfg, name, shape, kind, a, seed, start=0, count=None, period=0):
    """Element values [start, start+count) of HF tensor `name` (row-major), as Python floats
    rounded to f32. Uniform draws are bit-identical to the GPU's; the others agree to f32
    rounding of their transcendental functions."""
    n = math.prod(shape)
    count = n - start if count is None else count
    key = stream_key(seed, name)
    key2 = _mix(key + 0x9E3779B9)
    a = _f32(a)
    lo, hi, floor = _dt_range(cfg)
    out = array("f", bytes(4 * count))
    if kind == "const":
        for i in range(count):
            out[i] = a
    elif kind == "uniform":
        for i in range(count):
            out[i] = _f32(2.0 * _unit(key, key2, start + i) - 1.0) * a
    elif kind == "normal":
        for i in range(count):
            e = start + i
            u1, u2 = _unit(key, key2, 2 * e), _unit(key, key2, 2 * e + 1)
            out[i] = a * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    elif kind == "s4d_alog":
        N = period
        for i in range(count):
            out[i] = math.log((start + i) % N + 1)
    elif kind == "dt_bias":
        for i in range(count):
            u = _unit(key, key2, start + i)
            dt = max(math.exp(lo + u * (hi - lo)), floor)
            out[i] = dt if dt > 20.0 else dt + math.log(_one_minus_exp_neg(dt))
    else:
        raise ValueError(f"unknown init kind {kind!r}")
    return out


def init_weights_python(cfg, seed=0):
    """{HF name: f32 little-endian bytes} computed on the host (slow: small models only)."""
    out = {}
    for name, shape, kind, a, period in plan(cfg):
        vals = draw(cfg, name, shape, kind, a, seed, period=period)
        if struct.pack("=I", 1) != struct.pack("<I", 1):   # pragma: no cover - big-endian
            vals.byteswap()
        out[name] = vals.tobytes()
    return out
