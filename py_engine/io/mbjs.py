"""MBJS checkpoints (the seed engines' format): header parse/write, trailer, dimension inference.

Layout, verified against @seanhogg/builderforce-memory-engine 2026.7.14
(src/model/mamba_model.ts exportWeights/loadWeights, src/utils/crc32.ts); all integers are
little-endian u32:
  v1:  magic, 1, nParams, numel[nParams], f32 data
  v2:  magic, 2, nLayers, layerType u8[nLayers] zero-padded to a multiple of 4,
       nParams, numel[nParams], f32 data
  v3:  as v2 with version 3 and IEEE f16 data (npm's encoder truncates; ours rounds to nearest
       even like numpy/torch -- both decode the same way)
  then, optionally, the trailer: u32 0x52435645 (bytes "EVCR") + u32 CRC-32 (IEEE) of
  everything before the trailer. npm's exportWeights always appends it; its loader accepts
  files without it.
The magic is the u32 0x4D424A53 written little-endian, so the first four bytes on disk are
"SJBM", not "MBJS". The header is always a multiple of 4 bytes, so the data is 4-aligned.
Layer type ids: npm's 0 mamba1, 1 mamba2, 2 npm-mamba3, 3 attention (npm silently reads any
other id as mamba1; we refuse it), and ours, far from npm's so that a future npm id does not
collide: 16 mambaweb-mamba3 and 17 mambaweb-mamba3-softplus, state-spaces' Mamba-3 (mamba_ssm's
Mamba3 module, SISO and MIMO) with the heavy-tail or the softplus A activation. npm's type 2 is
its own "Mamba-3" (complex A, its own discretisation), a different model: refused by name.

Parameter order (HybridMambaModel.parameters()): embedding [V, D], each layer's parameters,
final norm [D]. No LM head: it is tied to the embedding. A Mamba-1 layer has 13 parameters,
listed in py_engine/io/hf_names.MBJS_MAMBA1_PARAMS; one of ours (Mamba-3) has 13 too, listed in
hf_names.MBJS_MAMBA3_PARAMS (the MIMO and output-norm tensors with numel 0 where the model has
none); an attention layer (npm's AttentionBlock without its FFN) has 5, wQKV, bQKV, wO, bO,
normWeight (hf_names.MBJS_ATTENTION_PARAMS; next to Mamba-1 layers, as this engine's attention
with one K/V head per query head). MBJS stores no config: dimensions are inferred from the
numel list (infer_config); what the numels cannot say comes from hints (Mamba-3: A_floor,
chunk_size, see _mamba3_config; attention: attention_heads, see _attention_kwargs).

Pure stdlib: this module is imported inside Pyodide. Big data never passes through here: the
caller streams bytes; parse functions take a prefix + the file size.
"""
import struct
import zlib
from dataclasses import dataclass, field

from py_engine.io.safetensors_format import NeedMoreBytes

MAGIC = 0x4D424A53                 # on disk: b"SJBM"
MAGIC_BYTES = struct.pack("<I", MAGIC)
TRAILER_MAGIC = 0x52435645         # on disk: b"EVCR"
TRAILER_BYTES = 8
LAYER_TYPE_IDS = {"mamba1": 0, "mamba2": 1, "npm-mamba3": 2, "attention": 3,
                  "mambaweb-mamba3": 16, "mambaweb-mamba3-softplus": 17}
# Our Mamba-3 layer types -> a_heavy_tail. The A activation changes every output and no numel
# shows it, so it is part of the type id rather than a hint a reader could forget.
OUR_MAMBA3_TYPES = {"mambaweb-mamba3": True, "mambaweb-mamba3-softplus": False}
ID_TO_LAYER_TYPE = {v: k for k, v in LAYER_TYPE_IDS.items()}
VERSION_DTYPE = {1: "f32", 2: "f32", 3: "f16"}
DTYPE_BYTES = {"f32": 4, "f16": 2}
# MBJS attention layers (type 3) are the npm engine's AttentionBlock (src/model/
# attention_block.ts, 2026.7.14): its parameters() (lines 308-329) list wQKV [3D, D], bQKV [3D],
# wO [D, D], bO [D], normWeight [D] (+ wFfn1, bFfn1, wFfn2, bFfn2 with hasFfn), and its header
# (lines 8-16) says what they compute: pre-norm, q | k | v = wQKV rows, H heads of D/H channels,
# causal softmax(q.k / sqrt(dh)) v, wO, residual -- this engine's attention layer with one K/V
# head per query head and no rotary embedding (hf_names.MBJS_ATTENTION_PARAMS maps them).
# What does not map, said by name: the head count (npm does not store it: a reader needs
# attention_heads), the FFN of hasFfn (linear -> SiLU -> linear with biases inside the block,
# no pre-norm: no layer kind here computes it), grouped-query heads, RoPE, and npm's Mamba-2 /
# Mamba-3 blocks next to it. npm's own forward does not compute its documented attention: it
# takes Q, K and V as contiguous thirds of the whole [tokens, 3D] projection buffer (lines
# 192-201, copyBufferToBuffer at 0, M*D, 2*M*D) rather than each token's q | k | v columns, and
# its attention kernel (src/kernels/attention.ts) calls workgroupBarrier in non-uniform control
# flow, so the npm engine cannot run a type-3 layer; the file format is what interoperates.
ATTENTION_NPM_FORWARD = (
    "the npm engine's own AttentionBlock.forward splits Q, K and V as contiguous thirds of the "
    "[tokens, 3*d_model] projection buffer (attention_block.ts lines 192-201) and its attention "
    "kernel does not compile, so only this engine computes the attention these weights define")
ATTENTION_FFN_NOT_MAPPED = (
    "an AttentionBlock with hasFfn (9 parameters: wFfn1, bFfn1, wFfn2, bFfn2 after the "
    "attention: linear -> SiLU -> linear with biases, inside the block, without a pre-norm), and "
    "no layer kind here computes that FFN; only attention layers without hasFfn (5 parameters) "
    "convert")
# Parameters per layer in npm's blocks. Attention has 5, or 9 with its FFN (hasFfn).
LAYER_PARAM_COUNTS = {"mamba1": 13, "mamba2": 9, "npm-mamba3": 9, "mambaweb-mamba3": 13,
                      "mambaweb-mamba3-softplus": 13}
# Why npm's layer type 2 maps to nothing here (its Mamba3Block, 2026.7.14).
NPM_MAMBA3_NOT_MAPPED = (
    "the npm engine's own \"Mamba-3\" block (MBJS layer type 2: a complex-valued A with its own "
    "discretisation, no data-dependent rotation or trapezoidal update), a different model from "
    "state-spaces' Mamba-3 that mambaweb runs, so its weights cannot be converted or run here; "
    "mambaweb writes its Mamba-3 under its own layer types 16/17 (README, MBJS)")
ATTENTION_PARAM_COUNTS = (5, 9)


@dataclass
class MbjsLayout:
    file: str
    version: int
    dtype: str                      # "f32" | "f16"
    layer_types: list               # ["mamba1", ...]; v1 files say nothing (empty list)
    numels: list                    # per parameter, file order
    header_size: int                # = offset of the first data byte
    file_size: int
    has_trailer: bool
    offsets: list = field(default_factory=list)   # absolute start of each parameter

    @property
    def data_end(self):
        return self.header_size + sum(self.numels) * DTYPE_BYTES[self.dtype]

    @property
    def n_params(self):
        return len(self.numels)


def parse_header(prefix, file_size, file="<mbjs>"):
    """Parse an MBJS header from the file's first bytes; NeedMoreBytes says how many."""
    def need(n):
        if n > file_size:
            raise ValueError(f"{file}: truncated MBJS header: needs {n} bytes, file has "
                             f"{file_size}")
        if len(prefix) < n:
            raise NeedMoreBytes(file, n)

    need(8)
    magic, version = struct.unpack_from("<II", prefix, 0)
    if magic != MAGIC:
        raise ValueError(f"{file}: not an MBJS file (first bytes {bytes(prefix[:4])!r}, "
                         f"expected {MAGIC_BYTES!r})")
    if version not in VERSION_DTYPE:
        raise ValueError(f"{file}: unsupported MBJS version {version}; supported: 1, 2, 3")
    off = 8
    need(off + 4)
    layer_types = []
    if version == 1:
        (n_params,) = struct.unpack_from("<I", prefix, off)
        off += 4
    else:
        (n_layers,) = struct.unpack_from("<I", prefix, off)
        off += 4
        type_bytes = (n_layers + 3) // 4 * 4
        if off + type_bytes + 4 > file_size:
            raise ValueError(f"{file}: truncated MBJS header: it declares {n_layers:,} layers, "
                             f"whose layer types need bytes [{off}, {off + type_bytes}) but "
                             f"the file has {file_size} (or it is corrupt)")
        need(off + type_bytes + 4)
        for i in range(n_layers):
            tid = prefix[off + i]
            if tid not in ID_TO_LAYER_TYPE:
                raise ValueError(f"{file}: layer {i} has unknown layer type id {tid}; known: "
                                 + ", ".join(f"{v}={k}" for k, v in LAYER_TYPE_IDS.items()))
            layer_types.append(ID_TO_LAYER_TYPE[tid])
        off += type_bytes
        (n_params,) = struct.unpack_from("<I", prefix, off)
        off += 4
    if off + 4 * n_params > file_size:
        raise ValueError(f"{file}: truncated MBJS header: it declares {n_params:,} parameters, "
                         f"whose numel list needs bytes [{off}, {off + 4 * n_params}) but the "
                         f"file has {file_size} (or it is corrupt)")
    need(off + 4 * n_params)
    numels = list(struct.unpack_from("<%dI" % n_params, prefix, off))
    header_size = off + 4 * n_params
    dtype = VERSION_DTYPE[version]
    offsets, pos = [], header_size
    for n in numels:
        offsets.append(pos)
        pos += n * DTYPE_BYTES[dtype]
    layout = MbjsLayout(file, version, dtype, layer_types, numels, header_size, file_size,
                        False, offsets)
    end = layout.data_end
    if file_size < end:
        raise ValueError(f"{file}: truncated MBJS data: the numel list needs {end} bytes, "
                         f"file has {file_size}")
    if file_size == end + TRAILER_BYTES:
        layout.has_trailer = True   # magic checked by check_trailer when the tail is read
    elif file_size != end:
        raise ValueError(f"{file}: {file_size - end} unexpected bytes after the MBJS data "
                         f"(expected none or an {TRAILER_BYTES}-byte EVCR trailer)")
    return layout


def check_trailer(layout, tail, payload_crc=None):
    """Validate the 8-byte trailer `tail`; with payload_crc, also the CRC. Returns stored CRC."""
    if not layout.has_trailer:
        return None
    if len(tail) != TRAILER_BYTES:
        raise ValueError(f"{layout.file}: trailer must be {TRAILER_BYTES} bytes")
    magic, stored = struct.unpack("<II", bytes(tail))
    if magic != TRAILER_MAGIC:
        raise ValueError(f"{layout.file}: 8 unexpected bytes after the MBJS data "
                         f"({bytes(tail[:4])!r} is not the EVCR trailer magic)")
    if payload_crc is not None and payload_crc != stored:
        raise ValueError(f"{layout.file}: CRC mismatch: trailer says {stored:08x}, data "
                         f"hashes to {payload_crc:08x} (file corrupt or truncated)")
    return stored


def crc32(chunk, crc=0):
    """Running IEEE CRC-32, the same function as npm's utils/crc32.ts."""
    return zlib.crc32(chunk, crc) & 0xFFFFFFFF


def read_layout(path, verify_crc=True, chunk=1 << 22):
    """Host/Pyodide-FS helper: parse a file's header, check its trailer (streaming the CRC)."""
    import os
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(min(size, 1 << 16))
        while True:
            try:
                layout = parse_header(prefix, size, str(path))
                break
            except NeedMoreBytes as e:
                prefix += f.read(e.needed - len(prefix))
        if layout.has_trailer:
            crc = None
            if verify_crc:
                f.seek(0)
                crc, left = 0, layout.data_end
                while left:
                    block = f.read(min(chunk, left))
                    crc = crc32(block, crc)
                    left -= len(block)
            f.seek(layout.data_end)
            check_trailer(layout, f.read(TRAILER_BYTES), crc)
    return layout


# --- writing ----------------------------------------------------------------

def build_header(numels, layer_types=None, version=2):
    """Header bytes for `numels` (and, for v2/v3, the layer schedule)."""
    if version not in VERSION_DTYPE:
        raise ValueError(f"MBJS version {version} is not one of 1, 2, 3")
    for n in numels:
        if not 0 <= n < 1 << 32:
            raise ValueError(f"numel {n} does not fit MBJS's u32 numel field")
    out = struct.pack("<II", MAGIC, version)
    if version == 1:
        if layer_types and any(t != "mamba1" for t in layer_types):
            raise ValueError("MBJS v1 can only hold Mamba-1 layers; write v2 or v3")
    else:
        layer_types = list(layer_types or [])
        for t in layer_types:
            if t not in LAYER_TYPE_IDS:
                raise ValueError(f"MBJS layer type {t!r} has no id; known: "
                                 + ", ".join(LAYER_TYPE_IDS) + " (a model's schedule becomes "
                                 "these names through layer_type_names(cfg))")
        out += struct.pack("<I", len(layer_types))
        ids = bytes(LAYER_TYPE_IDS[t] for t in layer_types)
        out += ids + b"\0" * ((4 - len(ids) % 4) % 4)
    out += struct.pack("<I", len(numels)) + struct.pack("<%dI" % len(numels), *numels)
    return out


def layer_type_names(cfg):
    """The MBJS layer type names of cfg's schedule: a Mamba-3 layer is ours (16, or 17 with the
    softplus A activation), never npm's type 2."""
    mamba3 = "mambaweb-mamba3" if cfg.a_heavy_tail else "mambaweb-mamba3-softplus"
    return [mamba3 if kind == "mamba3" else kind for kind in cfg.layers]


def build_trailer(payload_crc):
    return struct.pack("<II", TRAILER_MAGIC, payload_crc & 0xFFFFFFFF)


# --- dimensions -----------------------------------------------------------------

def split_layers(layout, hints=None):
    """Group the numel list: (embedding numel, [(layer type, [numels])], final norm numel)."""
    hints = hints or {}
    numels = layout.numels
    f = layout.file
    if len(numels) < 2:
        raise ValueError(f"{f}: {len(numels)} parameters; an MBJS model has at least an "
                         "embedding and a final norm")
    body = len(numels) - 2
    types = list(layout.layer_types)
    if layout.version == 1:
        # v1 carries no schedule; npm reads it as all Mamba-1.
        if body % 13:
            raise ValueError(f"{f}: MBJS v1 with {len(numels)} parameters is not 2 + 13 x "
                             "n_layers (embedding, Mamba-1 layers, final norm)")
        types = ["mamba1"] * (body // 13)
    counts = [_count(t, hints) for t in types]
    if None in counts:   # attention layers with or without FFN: try both, uniformly
        fixed = sum(c for c in counts if c is not None)
        n_attn = counts.count(None)
        fits = [a for a in ATTENTION_PARAM_COUNTS if fixed + a * n_attn == body]
        if len(fits) != 1:
            raise ValueError(f"{f}: cannot tell whether attention layers have an FFN; "
                             "give the hint attention_ffn=true or false")
        counts = [fits[0] if c is None else c for c in counts]
    if sum(counts) != body:
        raise ValueError(f"{f}: numel list has {body} layer parameters, but the layer "
                         f"schedule ({len(types)} layers) needs {sum(counts)}")
    layers, pos = [], 1
    for t, c in zip(types, counts):
        layers.append((t, numels[pos:pos + c]))
        pos += c
    return numels[0], layers, numels[-1]


def _count(kind, hints):
    if kind == "attention":
        ffn = hints.get("attention_ffn")
        return None if ffn is None else ATTENTION_PARAM_COUNTS[bool(ffn)]
    return LAYER_PARAM_COUNTS[kind]


def infer_config(layout, hints=None):
    """A MambaConfig with every dimension inferred from the numel list.

    hints: MambaConfig field values to use for what MBJS does not store (e.g.
    layer_norm_epsilon) and to cross-check what it does; a disagreement raises.
    The result is tied and bias-free; whether biases are needed is a property of the
    data (see tools/convert_host.py), not of the header.
    """
    from py_engine.models.config import MambaConfig
    hints = dict(hints or {})
    f = layout.file
    emb, layers, norm = split_layers(layout, hints)
    D = norm
    if D == 0 or emb % D:
        raise ValueError(f"{f}: embedding numel {emb} is not a multiple of the final norm "
                         f"size {D} (d_model)")
    V = emb // D
    for i, (kind, _) in enumerate(layers):
        if kind == "mamba2":
            # The npm engine's Mamba2Block projects [x | B | C | dt] with no gate z and norms
            # without it: a different model from transformers' / state-spaces' Mamba-2, whose
            # weights no mapping can turn into one another.
            raise ValueError(f"{f}: layer {i} is the npm engine's Mamba-2 block, which has no "
                             "gate z (in_proj [x|B|C|dt]); transformers' and state-spaces' "
                             "Mamba-2 gate with silu(z), so its weights cannot be converted. "
                             "Train a Mamba-2 here and keep it as HF safetensors")
        if kind == "attention" and len(layers[i][1]) != ATTENTION_PARAM_COUNTS[0]:
            raise ValueError(f"{f}: layer {i} is {ATTENTION_FFN_NOT_MAPPED}")
        if kind == "npm-mamba3":
            raise ValueError(f"{f}: layer {i} is {NPM_MAMBA3_NOT_MAPPED}")
    attention = _attention_kwargs(f, layers, D, hints)
    if any(kind in OUR_MAMBA3_TYPES for kind, _ in layers):
        if attention:
            first = next(i for i, (kind, _) in enumerate(layers) if kind == "attention")
            raise ValueError(f"{f}: layer {first} is attention in a Mamba-3 model; MBJS "
                             "attention converts next to Mamba-1 layers only")
        return _mamba3_config(f, layers, V, D, hints)
    dims = None
    for i, (kind, n) in enumerate(layers):
        if kind == "attention":
            continue
        d = _mamba1_dims(f, i, n, D)
        if dims is not None and d != dims:
            raise ValueError(f"{f}: layer {i} dimensions {d} differ from layer 0 {dims}; "
                             "MBJS -> HF needs all Mamba-1 layers the same shape")
        dims = d
    found = {"vocab_size": V, "hidden_size": D, "num_hidden_layers": len(layers)}
    if dims:
        I, K, N, R = dims
        if I % D:
            raise ValueError(f"{f}: inner size {I} is not a multiple of d_model {D}; "
                             "HF derives intermediate_size = expand * d_model")
        found.update(expand=I // D, conv_kernel=K, state_size=N, time_step_rank=R)
    for key, value in found.items():
        if key in hints and hints[key] != value:
            raise ValueError(f"{f}: hint {key}={hints[key]} disagrees with the file, which "
                             f"implies {key}={value}")
    known = set(MambaConfig.__dataclass_fields__)
    kwargs = {k: v for k, v in hints.items() if k in known}
    kwargs.update(found)
    kwargs.update(attention)
    # no bias unless the data says so (convert_plan reads the MBJS biases: all zero -> none)
    kwargs.update(tie_word_embeddings=True, attention_qkv_bias=False, attention_out_bias=False,
                  layers=["attention" if kind == "attention" else "mamba1"
                          for kind, _ in layers])
    return MambaConfig(**kwargs)


class MissingHint(ValueError):
    """A setting the MBJS file does not store and this file needs: `hint` names it (the
    convert page asks for it and reads the file again)."""

    def __init__(self, message, hint):
        super().__init__(message)
        self.hint = hint


def _attention_kwargs(f, layers, D, hints):
    """MambaConfig fields of the schedule's npm attention layers ({} without any): numels
    checked, the head count from the hints (MBJS does not store it)."""
    idx = [i for i, (kind, _) in enumerate(layers) if kind == "attention"]
    if not idx:
        return {}
    for i in idx:
        n = layers[i][1]
        want = [3 * D * D, 3 * D, D * D, D, D]
        for name, got, exp in zip(("wQKV", "bQKV", "wO", "bO", "normWeight"), n, want):
            if got != exp:
                raise ValueError(f"{f}: numel mismatch: layer {i} (attention) {name} has {got}, "
                                 f"expected {exp} (d_model {D})")
    H = hints.get("attention_heads")
    if not H:
        raise MissingHint(f"{f}: layer {idx[0]} is attention and MBJS does not store its head "
                          "count: give attention_heads (a config.json beside the file, the "
                          "convert page's attention heads box, or mambaweb convert "
                          "--attention-heads N)", "attention_heads")
    H = int(H)
    if D % H:
        raise ValueError(f"{f}: attention_heads {H} does not divide d_model {D}; the npm "
                         "engine's AttentionBlock has heads x head_dim = d_model")
    found = {"attention_heads": H, "attention_kv_heads": H, "attention_head_dim": D // H}
    for key, value in found.items():
        if hints.get(key) not in (None, 0, value):
            raise ValueError(f"{f}: hint {key}={hints[key]} disagrees with the file's npm "
                             f"attention layers, which imply {key}={value} (one key/value head "
                             "per query head, heads x head_dim = d_model)")
    if hints.get("attention_rope"):
        raise ValueError(f"{f}: hint attention_rope=true, but the npm engine's attention layers "
                         "have no rotary position embedding")
    return {**found, "attention_rope": False}


def _mamba1_dims(f, i, n, D):
    # n: wInProj 2I*D, bInProj 2I, wConv I*K, bConv I, wXProj (R+2N)*I, bXProj R+2N,
    #    wDtProj I*R, bDtProj I, A_log I*N, D_vec I, wOutProj D*I, bOutProj D, normWeight D
    if n[1] % 2:
        raise ValueError(f"{f}: layer {i} bInProj numel {n[1]} is odd (expected 2 x inner)")
    I = n[1] // 2
    checks = [("bConv", n[3], I), ("bDtProj", n[7], I), ("D_vec", n[9], I),
              ("bOutProj", n[11], D), ("normWeight", n[12], D),
              ("wInProj", n[0], 2 * I * D), ("wOutProj", n[10], D * I)]
    for name, got, want in checks:
        if got != want:
            raise ValueError(f"{f}: numel mismatch: layer {i} {name} has {got}, "
                             f"expected {want} (d_model {D}, inner {I})")
    if I == 0:
        raise ValueError(f"{f}: layer {i} has inner size 0")
    for name, got in (("wConv", n[2]), ("wDtProj", n[6]), ("A_log", n[8]), ("wXProj", n[4])):
        if got % I:
            raise ValueError(f"{f}: numel mismatch: layer {i} {name} has {got}, not a "
                             f"multiple of inner size {I}")
    K, R, N = n[2] // I, n[6] // I, n[8] // I
    if n[4] != (R + 2 * N) * I or n[5] != R + 2 * N:
        raise ValueError(f"{f}: numel mismatch: layer {i} x_proj has {n[4]} / {n[5]}, "
                         f"expected {(R + 2 * N) * I} / {R + 2 * N} (R {R}, N {N}, inner {I})")
    return I, K, N, R


def _mamba3_config(f, layers, V, D, hints):
    """A MambaConfig for a model of our Mamba-3 layers (types 16/17), every size read off the
    numels (hf_names.MBJS_MAMBA3_PARAMS):
      in_proj rows = 2I + 2RGN + 3H + S, dt_bias H, D H, B_norm/C_norm N, B_bias/C_bias H*R*N,
      mimo_x/z/o H*R*P (0: SISO), norm I (0: no is_outproj_norm), out_proj D*I, pre-norm D;
    so I, H, P = I/H, N, R, MIMO, is_outproj_norm, then G = (rows-2I-3H) // 2RN and S the
    remainder (S <= N/2 < 2RN), whose value gives rope_fraction. The A activation is the type id.
    Not in the file: A_floor (default mamba_ssm's 1e-4) and chunk_size (default 64, 64/R for
    MIMO; a kernel tile that does not change outputs) -- hints, e.g. a config.json beside it."""
    from py_engine.models.config import MambaConfig
    kinds = {kind for kind, _ in layers}
    if len(kinds) != 1:
        raise ValueError(f"{f}: layer types {sorted(kinds)} are mixed; a Mamba-3 MBJS model has "
                         "one A activation and only Mamba-3 layers")
    dims = None
    for i, (_, n) in enumerate(layers):
        d = _mamba3_dims(f, i, n, D)
        if dims is not None and d != dims:
            raise ValueError(f"{f}: layer {i} dimensions {d} differ from layer 0 {dims}; "
                             "a Mamba-3 model has all layers the same shape")
        dims = d
    I, H, P, N, R, G, S, mimo, onorm = dims
    if I % D:
        raise ValueError(f"{f}: inner size {I} is not a multiple of d_model {D}; mamba_ssm "
                         "derives d_inner = expand * d_model")
    fractions = [rf for rf in (0.5, 1.0) if (int(N * rf) - int(N * rf) % 2) // 2 == S]
    if not fractions:
        raise ValueError(f"{f}: layer 0 rotates {S} angle pairs, which neither rope_fraction "
                         f"0.5 nor 1.0 gives for d_state {N}")
    found = {"model_type": "mamba3", "vocab_size": V, "hidden_size": D,
             "num_hidden_layers": len(layers), "state_size": N, "expand": I // D,
             "head_dim": P, "num_heads": H, "n_groups": G, "rope_fraction": fractions[0],
             "is_mimo": mimo, "is_outproj_norm": onorm,
             "a_heavy_tail": OUR_MAMBA3_TYPES[layers[0][0]]}
    if mimo:
        found["mimo_rank"] = R
    for key, value in found.items():
        if key in hints and hints[key] != value:
            raise ValueError(f"{f}: hint {key}={hints[key]} disagrees with the file, which "
                             f"implies {key}={value}")
    known = set(MambaConfig.__dataclass_fields__)
    kwargs = {k: v for k, v in hints.items() if k in known}
    kwargs.setdefault("A_floor", 1e-4)
    kwargs.setdefault("chunk_size", max(1, 64 // R) if mimo else 64)
    kwargs.update(found)
    kwargs.update(tie_word_embeddings=True, layers=["mamba3"] * len(layers))
    return MambaConfig(**kwargs)


def _mamba3_dims(f, i, n, D):
    """(I, H, P, N, R, G, S, mimo, onorm) of one of our Mamba-3 layers from its 13 numels."""
    def bad(name, got, want, why):
        raise ValueError(f"{f}: numel mismatch: layer {i} {name} has {got}, expected {want} "
                         f"({why})")
    in_proj, H, Dv, N, Cn, Bb, Cb, mx, mz, mo, onorm_n, out_proj, pre = n
    if pre != D:
        bad("normWeight", pre, D, f"d_model {D}")
    if out_proj % D or not out_proj:
        bad("outProj", out_proj, "a positive multiple of d_model", f"d_model {D}")
    I = out_proj // D
    if not H or I % H:
        bad("dtBias", H, "a head count dividing the inner size", f"inner {I}")
    P = I // H
    if Dv != H:
        bad("D_vec", Dv, H, f"{H} heads")
    if not N or Cn != N:
        bad("C_norm", Cn, N, f"B_norm's d_state {N}")
    if Bb % (H * N) or not Bb:
        bad("B_bias", Bb, "heads x rank x d_state", f"{H} heads, d_state {N}")
    R = Bb // (H * N)
    if Cb != Bb:
        bad("C_bias", Cb, Bb, "the size of B_bias")
    mimo = mx > 0
    want_m = H * R * P if mimo else 0
    for name, got in (("mimoX", mx), ("mimoZ", mz), ("mimoO", mo)):
        if got != want_m:
            bad(name, got, want_m, f"MIMO rank {R}, {H} heads x head_dim {P}" if mimo
                else "SISO: no MIMO projections")
    if not mimo and R != 1:
        bad("B_bias", Bb, H * N, "SISO (no mimo_x) has rank 1")
    if onorm_n not in (0, I):
        bad("outNorm", onorm_n, f"0 or {I}", f"inner {I}: is_outproj_norm off or on")
    if in_proj % D:
        bad("inProj", in_proj, "a multiple of d_model", f"d_model {D}")
    rest = in_proj // D - 2 * I - 3 * H          # = 2RGN + S, with S <= N/2 < 2RN
    G, S = divmod(rest, 2 * R * N) if rest > 0 else (0, 0)
    if G < 1 or H % G or S < 1:
        raise ValueError(f"{f}: numel mismatch: layer {i} inProj has {in_proj // D} rows, which "
                         f"is not 2*{I} + 2*{R}*G*{N} + 3*{H} + S for a group count G dividing "
                         f"{H} heads and 1 <= S <= d_state/2")
    return I, H, P, N, R, G, S, mimo, onorm_n > 0
