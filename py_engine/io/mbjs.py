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
Layer type ids: 0 mamba1, 1 mamba2, 2 mamba3, 3 attention (npm silently reads any other id
as mamba1; we refuse it).

Parameter order (HybridMambaModel.parameters()): embedding [V, D], each layer's parameters,
final norm [D]. No LM head: it is tied to the embedding. A Mamba-1 layer has 13 parameters,
listed in py_engine/io/hf_names.MBJS_MAMBA1_PARAMS. MBJS stores no config: dimensions are
inferred from the numel list (infer_config).

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
LAYER_TYPE_IDS = {"mamba1": 0, "mamba2": 1, "mamba3": 2, "attention": 3}
ID_TO_LAYER_TYPE = {v: k for k, v in LAYER_TYPE_IDS.items()}
VERSION_DTYPE = {1: "f32", 2: "f32", 3: "f16"}
DTYPE_BYTES = {"f32": 4, "f16": 2}
# Why MBJS attention layers (type 3) map to nothing here, in either direction. npm's
# AttentionBlock (src/model/attention_block.ts, 2026.7.14) stores wQKV [3D, D], bQKV [3D],
# wO [D, D], bO [D], normWeight [D] (+ wFfn1, bFfn1, wFfn2, bFfn2 with hasFfn), but its forward
# takes Q, K and V as the first, second and third THIRD of the whole [tokens, 3D] projection
# buffer (copyBufferToBuffer at 0, M*D, 2*M*D), not as the q|k|v columns of each token; the
# head count is not stored; its FFN has no pre-norm and a plain silu. No weights make that
# compute causal attention, so a converted file would silently change the model's outputs.
ATTENTION_NOT_MAPPED = (
    "its forward splits Q, K and V as contiguous thirds of the whole [tokens, 3*d_model] "
    "projection buffer instead of each token's q|k|v columns, and MBJS stores no head count, so "
    "no attention layer here computes what it computes; keep hybrid models as HF safetensors "
    "(or mamba_ssm checkpoints)")
# Parameters per layer in npm's blocks. Attention has 5, or 9 with its FFN (hasFfn).
LAYER_PARAM_COUNTS = {"mamba1": 13, "mamba2": 9, "mamba3": 9}
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
        out += struct.pack("<I", len(layer_types))
        ids = bytes(LAYER_TYPE_IDS[t] for t in layer_types)
        out += ids + b"\0" * ((4 - len(ids) % 4) % 4)
    out += struct.pack("<I", len(numels)) + struct.pack("<%dI" % len(numels), *numels)
    return out


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
        if kind == "attention":
            raise ValueError(f"{f}: layer {i} is the npm engine's AttentionBlock ({ATTENTION_NOT_MAPPED})")
        if kind != "mamba1":
            dims = _other_layer_dims(f, i, kind, layers[i][1], D, hints)
            raise ValueError(f"{f}: layer {i} is {kind} ({dims}); mambaweb reads Mamba-1 "
                             "MBJS layers only so far")
    dims = None
    for i, (_, n) in enumerate(layers):
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
    kwargs.update(tie_word_embeddings=True, layers=["mamba1"] * len(layers))
    return MambaConfig(**kwargs)


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


def _other_layer_dims(f, i, kind, n, D, hints):
    """What can be read off a non-Mamba-1 layer; names the hint where it is ambiguous."""
    if kind == "attention":
        return f"d_model {n[4]}" + (f", ffn {n[5] // D}" if len(n) == 9 else "")
    # mamba2 / mamba3: wInProj, wConv, bConv, A_log, dt_bias, D_vec, wOutProj, norm, preNorm
    inner = n[6] // D if D else 0
    heads = n[4]
    conv_dim = n[2]
    K = n[1] // conv_dim if conv_dim else 0
    per = 2 if kind == "mamba2" else 4        # x|B|C conv: 2*G*N (mamba3: complex, 2*G*Nc*2)
    gn = (conv_dim - inner) // per
    groups = hints.get("n_groups")
    if groups is None:
        raise ValueError(f"{f}: layer {i} ({kind}): n_groups x state_size = {gn} is "
                         "ambiguous; give the hint n_groups")
    if gn % groups:
        raise ValueError(f"{f}: layer {i} ({kind}): hint n_groups={groups} does not divide "
                         f"n_groups x state_size = {gn}")
    return (f"inner {inner}, heads {heads}, conv {K}, groups {groups}, "
            f"state {gn // groups}")
