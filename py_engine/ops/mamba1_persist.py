"""A whole Mamba-1 (or Falcon-Mamba) decode layer in one dispatch (shaders/lib/mamba1_persist.wgsl):
the four dispatches of nn/mamba1.Mamba1Mixer.step -- norm + in_proj + conv step, x_proj, dt_proj
+ scan step + gate, out_proj + residual -- as phases of one kernel whose workgroups stay
resident and wait for each phase's inputs inside it (values passed through zeroed scratch
words, spun on: the shader's header says why that needs no grid barrier).

A token at mamba-1.4b is 196 dependent dispatches, each costing the GPU's floor (~2 us on an
H200) and its own ramp and drain beyond its bytes (README: "What bounds decode at 1.4b"); this
makes it 52. tools/bench_chain says in-kernel waits beat the boundaries with equal row code;
this kernel, timed on an H200 through Dawn, is still slower than the engine's dispatches
(mamba-130m f16 1.14 ms a token at 264 workgroups against 0.44: docs/gpu_journal.md,
twenty-ninth session), so off by rule:
`device.mamba1_persist` (tests) or MAMBAWEB_MAMBA1_PERSIST=1 (bench variants) turns it on,
`device.persist_groups` / MAMBAWEB_PERSIST_GROUPS sets the workgroups (all must be resident
at once for the speed, not for the result: a workgroup takes whichever blocks of a phase are
left, so those resident do the work of those that are not; every spin is bounded all the same,
a give-up counted in `fails`).

Applies to one sequence (Bsz 1) with in_proj, x_proj and out_proj unbiased, in one format (f32,
f16, q8 or q4, whose chunk of 4 / 8 / 16 / 32 weights must divide d_model and the inner width),
no LoRA adapter, 4 conv taps, d_state <= 16, d_model and the inner width <= 4096 (one
workgroup's staged input), the layer's conv and ssm states in one buffer (ModelState packs
them), and 16 storage buffers a shader stage (an H200 through Dawn offers 16; SwiftShader 10).

Scratch (one buffer for the model, `Scratch`): per layer u [I], z [I], x_proj's outputs
[R + 2N], y [I] and per phase its passes done, blocks taken and a flag a block (the shader's
header: any workgroup takes any block, so a GPU that holds fewer than G workgroups at once still
finishes), at 256-byte boundaries, zeroed by one copy at the start of each token
(models/mamba.py); then one word counting spins given up, never zeroed."""
import struct

from py_engine.gpu.settings import choose, pick
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops._common import params
from py_engine.ops import weight_format
from py_engine.ops.lora import adapter_of

SHADERS = {"f32": "mamba1_persist_f32", "f16": "mamba1_persist_f16", "q8": "mamba1_persist_q8",
           "q4": "mamba1_persist_q4"}
STORAGE_BINDINGS = 16
MAX_WIDTH = 4096           # D and I: the staged input is 1,024 vec4s of workgroup memory
WORKGROUP_BYTES = 4 * (4 * 1024 + 256 + 512 + 1 + 4 + 16 + 3)   # xs, red, xq, wsum, nq, dts, ..
GROUPS = (1, 2, 4, 8, 16, 32, 66, 132, 264, 528, 1056)
SPIN = 1 << 10             # spin rounds before a thread gives up (a phase's wait: 256 loads a
                           # round, ~0.1 s on a GPU; a word's: one load a round)
# On lavapipe every round is a loop pass counted against the driver's 65,535 an invocation
# (shaders/LOOP_BUDGET.md; a phase wait's 256 loads are written out, no loop), and thread 0
# waits up to three times a layer: 3 x 12,000 rounds stay below it with the tiny models' loops,
# so a wait too long gives up and is counted rather than stopping the kernel's loops silently.
SPIN_CPU = 12000


def enabled(dev):
    """Whether Mamba-1 layers decode in one dispatch: `device.mamba1_persist` (tests), else
    MAMBAWEB_MAMBA1_PERSIST = 1 | 0; off by rule until timed on a GPU (tools/bench_chain)."""
    return choose(dev, "mamba1_persist", "MAMBAWEB_MAMBA1_PERSIST", "1", "0", lambda: False)


def groups(dev):
    """Workgroups of the kernel: `device.persist_groups` / MAMBAWEB_PERSIST_GROUPS, else 132
    (an H200's SMs: one workgroup each; a rule to replace with bench_chain's best)."""
    return pick(dev, "persist_groups", "MAMBAWEB_PERSIST_GROUPS", GROUPS, lambda: 132)


TPRS = (16, 32, 64, 128, 256)
# Threads a row per phase when nothing is set: the engine's decode rule at mamba-1.4b's shapes
# (weight_format.rows_per_thread_group: in_proj 16, x_proj's 160 rows 256, out_proj 64).
TPR_RULE = {"in": 16, "xp": 256, "out": 64}


def tprs(dev):
    """Threads a weight row in the in_proj, x_proj and out_proj phases (TPR_IN, TPR_XP,
    TPR_OUT): `device.persist_tpr` / MAMBAWEB_PERSIST_TPR sets all three (tests, bench
    variants), else `device.persist_tpr_<in|xp|out>` / MAMBAWEB_PERSIST_TPR_<IN|XP|OUT> each,
    else TPR_RULE."""
    every = pick(dev, "persist_tpr", "MAMBAWEB_PERSIST_TPR", TPRS, lambda: None)
    if every is not None:
        return every, every, every
    return (pick(dev, "persist_tpr_in", "MAMBAWEB_PERSIST_TPR_IN", TPRS, lambda: TPR_RULE["in"]),
            pick(dev, "persist_tpr_xp", "MAMBAWEB_PERSIST_TPR_XP", TPRS, lambda: TPR_RULE["xp"]),
            pick(dev, "persist_tpr_out", "MAMBAWEB_PERSIST_TPR_OUT", TPRS,
                 lambda: TPR_RULE["out"]))


def static_blocks(dev):
    """Workgroup g takes block g of each phase and no other (no flags): `device.persist_static`
    / MAMBAWEB_PERSIST_STATIC=1, a bench variant pricing the flags; it needs every workgroup
    resident at once (a GPU that cannot hold them gives up its spins: persist_fails), so never
    the rule."""
    return choose(dev, "persist_static", "MAMBAWEB_PERSIST_STATIC", "1", "0", lambda: False)


def ahead(dev):
    """Whether x_proj's and out_proj's phases load their own block's second trip before waiting
    (AHEAD in the shader): `device.persist_ahead` / MAMBAWEB_PERSIST_AHEAD = 1 | 0, else off
    (untimed)."""
    return choose(dev, "persist_ahead", "MAMBAWEB_PERSIST_AHEAD", "1", "0", lambda: False)


def count_wait(dev):
    """Whether thread 0 waits for a phase's count before its workgroup reads the phase's words
    (COUNT in the shader), else every thread spins on its own words: `device.persist_count` /
    MAMBAWEB_PERSIST_COUNT = 1 | 0, else on."""
    return choose(dev, "persist_count", "MAMBAWEB_PERSIST_COUNT", "1", "0", lambda: True)


def written_out_poll(dev):
    """Whether thread 0 polls a phase's count in rounds of 256 written-out loads (WRITTEN_OUT
    in the shader: lavapipe, whose every loop pass counts against its cap) or one load a loop
    pass: `device.persist_written_out` / MAMBAWEB_PERSIST_WRITTEN_OUT = 1 | 0, else on CPU
    adapters only."""
    return choose(dev, "persist_written_out", "MAMBAWEB_PERSIST_WRITTEN_OUT", "1", "0",
                  lambda: bool(dev.info.get("is_fallback")))


def last_phase(dev):
    """The last of the layer's four phases the kernel runs (LAST in the shader): 3 (all) by
    rule; 0-2 only as a bench ablation -- `device.persist_last` / MAMBAWEB_PERSIST_LAST -- which
    leaves the layer's output WRONG, to time what each phase adds."""
    return pick(dev, "persist_last", "MAMBAWEB_PERSIST_LAST", (0, 1, 2, 3), lambda: 3)


def _fmt(ws):
    dts = {w.dtype for w in ws}
    return dts.pop() if len(dts) == 1 and dts <= set(SHADERS) else None


def applies(dev, mixer, Bsz, state):
    """Why the layer cannot decode in one dispatch here (a short reason), or None if it can."""
    s = mixer.spec
    lim = dev.limits
    if not enabled(dev):
        return "off"
    if Bsz != 1:
        return "Bsz > 1"
    if lim.get("maxStorageBuffersPerShaderStage", 8) < STORAGE_BINDINGS:
        return "fewer than 16 storage buffers a stage"
    if lim.get("maxComputeWorkgroupStorageSize", 16384) < WORKGROUP_BYTES:
        return "workgroup memory"
    if "subgroups" not in dev.features:
        return "no subgroups"
    mats = [mixer.in_x, mixer.in_z, mixer.x_dt, mixer.x_B, mixer.x_C, mixer.out_w]
    fmt = _fmt(mats)
    if fmt is None:
        return "weight formats"
    if any(adapter_of(dev, w) is not None for w in mats + [mixer.dt_w]):
        return "LoRA adapter"
    if not mixer.in_unbiased or mixer.out_b is not None or mixer.dt_b is None:
        return "biases"
    if s.K != 4 or s.N > 16 or s.D > MAX_WIDTH or s.I > MAX_WIDTH or s.R + 2 * s.N > 512:
        return "shape"
    if not all(weight_format.fits(w.shape, fmt) for w in mats):    # whole 16-byte chunks
        return "shape"
    if mixer.dt_w.dtype != "f32":
        return "dt_proj format"
    if state.conv.buffer is not state.ssm.buffer or state.ssm.offset < state.conv.offset:
        return "states apart"
    return None


def layer_words(s, G):
    """Scratch words of one layer at G workgroups (u, z, x_proj's outputs, y; per phase the
    passes done, the blocks taken and a flag a block), 256-byte rounded."""
    n = 3 * s.I + s.R + 2 * s.N + 4 * (2 + G)
    return -(-n // 64) * 64


class Scratch:
    """The model's scratch: layer i's words at i * per, the fails word after the last 64-word
    block that is zeroed each token. `clear(batch)` records the zeroing copy."""

    def __init__(self, dev, spec, layers, G):
        self.dev = dev
        self.layers = layers
        self.G = G
        self.per = layer_words(spec, G)
        self.words = self.per * layers + 64
        # buffers of its own, not the pool's: made during the Generator's first recorded step,
        # pool tensors would come from that recording's private pool and die with it
        self.buf = Tensor(dev, (self.words,), buffer=dev.buffer(4 * self.words, label="persist"))
        self.zeros = Tensor(dev, (self.words - 64,),
                            buffer=dev.buffer(4 * (self.words - 64), label="persist zeros"))
        b = dev.batch()
        ew.fill(b, self.buf, 0.0)
        ew.fill(b, self.zeros, 0.0)
        b.submit()

    def clear(self, batch):
        batch.copy(self.zeros.buffer, self.zeros.offset, self.buf.buffer, self.buf.offset,
                   self.zeros.nbytes)

    async def fails(self):
        """Spins given up since the model loaded (0: every persistent token was right)."""
        raw = await self.dev.read(self.buf.buffer, 4 * (self.words - 1), 4)
        return struct.unpack("<I", raw)[0]

    def release(self):
        self.dev.destroy_many([self.buf.buffer, self.zeros.buffer])


def layer_step(batch, mixer, residual, norm_w, eps, state, scratch, layer):
    """Record layer `layer`'s decode step as one dispatch: residual [1, D] += the layer's
    output; its conv and ssm states advanced in place. The caller checked applies()."""
    dev = batch.device
    s = mixer.spec
    fmt = _fmt([mixer.in_x])
    flags = (1 if mixer.conv_b is not None else 0) | (2 if s.bc_eps is not None else 0)
    base = state.conv.offset
    st_size = state.ssm.offset + state.ssm.nbytes - base
    off = 4 * layer * scratch.per
    fail_at = scratch.words - 1 - layer * scratch.per
    spin = SPIN_CPU if dev.info.get("is_fallback") else SPIN
    u = dev.uniform(params(s.D, s.I, s.R, s.N, flags, spin, float(eps),
                           float(s.bc_eps if s.bc_eps is not None else 0.0),
                           0, (state.ssm.offset - base) // 4, fail_at, 0))
    conv_b = mixer.conv_b if mixer.conv_b is not None else mixer.dt_b    # unread without bit0
    res = [u, residual.binding, norm_w.binding,
           mixer.in_x.binding, mixer.in_z.binding, mixer.x_dt.binding, mixer.x_B.binding,
           mixer.x_C.binding, mixer.out_w.binding,
           mixer.conv_w.binding, conv_b.binding, (state.conv.buffer, base, st_size),
           mixer.dt_w.binding, mixer.dt_b.binding, mixer.A_log.binding, mixer.D.binding,
           (scratch.buf.buffer, scratch.buf.offset + off, 4 * scratch.words - off)]
    t_in, t_xp, t_out = tprs(dev)
    consts = {"SG": 1 if not dev.info.get("is_fallback") else 0, "TPR_IN": t_in,
              "TPR_XP": t_xp, "TPR_OUT": t_out, "STATIC": 1 if static_blocks(dev) else 0,
              "AHEAD": 1 if ahead(dev) else 0, "LAST": last_phase(dev),
              "COUNT": 1 if count_wait(dev) else 0,
              "WRITTEN_OUT": 1 if written_out_poll(dev) else 0}
    batch.run(SHADERS[fmt], "mamba1_persist", res, scratch.G, constants=consts)
