"""MambaModel: embedding -> [RMSNorm -> mixer -> +residual] * L -> RMSNorm -> LM head.

The mixer of layer i is whatever kind the schedule names (cfg.layers[i]: "mamba1", "mamba2",
...); the registry (py_engine/nn/registry.py) supplies its Mixer and State classes.
Two paths that must agree (tests assert it):
  forward(ids)           parallel over the sequence (prefill, training)
  step(token, state)     recurrent, one token, constant memory (decode)
Falcon-Mamba is Mamba-1 with weightless norms on B, C, dt.
"""
import json
import struct

from py_engine.gpu.tensor import Tensor, aligned_offsets
from py_engine.models.names import EMBED, LM_HEAD, NORM_F
from py_engine.models.schedule import logical_kinds, logical_layers
from py_engine.nn import registry
from py_engine.ops import elementwise as ew
from py_engine.ops import position
from py_engine.ops.embedding import embedding_forward
from py_engine.ops.linear import linear_forward
from py_engine.ops.rmsnorm import NormedRows
from py_engine.models.packing import pack_model
from py_engine.autograd import functional as F
from py_engine.autograd.functional import Ctx

PACK_LIMIT = 128 << 20   # ModelState packs its recurrent tensors into one buffer up to this size


class ModelState:
    """The whole recurrent state: one state object per layer (its kind's State). Snapshots are
    plain bytes."""

    MAGIC = b"MWST"        # version 1: Mamba-1 only, no header
    MAGIC_V2 = b"MWS2"

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        self.device, self.cfg, self.Bsz = device, cfg, Bsz
        # one state per logical layer: a physical layer used twice keeps two states
        self.kinds = logical_kinds(cfg)
        self.layers = [registry.get(kind).State(device, cfg, Bsz, max_tokens)
                       for kind in self.kinds]
        # tokens seen per sequence, on the GPU: advanced inside the (replayed) step graph;
        # layers that need per-token positions (attention's KV slot) read it
        self.pos = position.new_positions(device, Bsz)
        for layer in self.layers:
            layer.pos = self.pos
        caps = [layer.capacity for layer in self.layers if getattr(layer, "capacity", None)]
        self.capacity = min(caps) if caps else None   # tokens the state can hold (None: any)
        self.packed = self._pack()
        self.tokens_seen = 0
        self.reset()

    def _pack(self):
        """Move every tensor a prefill overwrites (the recurrent and conv states, not attention
        caches) into one buffer, each at a 256-byte boundary (bindings' offset alignment), and
        return that buffer's tensor; None (each keeps its own) for fewer than two or past
        PACK_LIMIT. A decode group's rollback copy and a prefill's backup are then one copy
        command instead of one per tensor: 97 at mamba-1.4b, ~3% of a streamed token's
        commands through Dawn and a third of a one-step group's."""
        ts = self.overwritten_tensors()
        starts, total = aligned_offsets([t.nbytes for t in ts], 256)
        if len(ts) < 2 or total > PACK_LIMIT:
            return None
        packed = Tensor(self.device, (total // 4,))
        for t, off in zip(ts, starts):
            t.rebind(packed.buffer, packed.offset + off)    # the layer's own tensor object
        return packed

    def overwritten_spans(self):
        """The bytes of overwritten_tensors as few tensors as possible, for copies: the packed
        buffer (padding included), else each tensor."""
        return [self.packed] if self.packed is not None else self.overwritten_tensors()

    def tensors(self):
        return [t for layer in self.layers for t in layer.tensors()]

    def overwritten_tensors(self):
        """The tensors a forward over new tokens overwrites in place (recurrent and conv
        states; an attention cache only gains slots past the position, which the forward
        advances last)."""
        return [t for layer in self.layers if not getattr(layer, "APPEND_ONLY", False)
                for t in layer.tensors()]

    def reset(self):
        batch = self.device.batch()
        for t in self.tensors():
            ew.fill(batch, t, 0.0)
        batch.submit()
        position.set_positions(self.device, self.pos, 0)
        self.tokens_seen = 0

    def layout(self):
        """What a snapshot records: per layer its kind and its tensors' shapes and dtypes."""
        return [{"kind": kind, "tensors": [{"shape": list(t.shape), "dtype": "f32"}
                                           for t in layer.tensors()]}
                for kind, layer in zip(self.kinds, self.layers)]

    async def to_bytes(self) -> bytes:
        """Snapshot v2: MWS2 | u32 header bytes | JSON header {version, Bsz, tokens_seen,
        layers: [{kind, tensors: [{shape, dtype}]}]} | each tensor's bytes in that order."""
        head = json.dumps({"version": 2, "Bsz": self.Bsz, "tokens_seen": self.tokens_seen,
                           "layers": self.layout()}, separators=(",", ":")).encode("utf-8")
        parts = [self.MAGIC_V2, struct.pack("<I", len(head)), head]
        for t in self.tensors():
            parts.append(await t.to_bytes())
        return b"".join(parts)

    def load_bytes(self, data: bytes):
        """Restore a snapshot. v2 must record this model's layer kinds and shapes; a v1
        snapshot (MWST, written before layer kinds were recorded) loads only into an
        all-Mamba-1 model of the same size. Anything else is refused by name and leaves the
        current state as it was."""
        data = bytes(data)
        if data[:4] == self.MAGIC_V2:
            off, seen = self._check_v2(data)
        elif data[:4] == self.MAGIC:
            off, seen = self._check_v1(data)
        else:
            raise ValueError("not a mambaweb state snapshot (bad magic)")
        for t in self.tensors():
            self.device.write(t.buffer, data[off:off + t.numel * 4], t.offset)
            off += t.numel * 4
        position.set_positions(self.device, self.pos, seen)
        self.tokens_seen = seen

    def _check_v2(self, data):
        (n,) = struct.unpack_from("<I", data, 4)
        try:
            head = json.loads(data[8:8 + n].decode("utf-8"))
        except ValueError:
            raise ValueError("state snapshot: its header is not valid JSON (file damaged?)") from None
        if head.get("version") != 2:
            raise ValueError(f"state snapshot version {head.get('version')!r} is newer than this "
                             "engine reads (2)")
        want, got = self.layout(), head.get("layers")
        kinds = [l.get("kind") for l in got or []]
        if kinds != self.kinds:
            raise ValueError(f"state snapshot is for layers {_runs(kinds)}; this model has "
                             f"{_runs(self.kinds)}")
        if got != want or head.get("Bsz") != self.Bsz:
            raise ValueError("state snapshot shapes differ from this model's (a different size "
                             "of the same architecture, or another batch size)")
        off = 8 + n
        expected = off + sum(t.numel * 4 for t in self.tensors())
        if len(data) != expected:
            raise ValueError(f"state snapshot has {len(data)} bytes, expected {expected} "
                             "(truncated?)")
        return off, int(head.get("tokens_seen", 0))

    def _check_v1(self, data):
        n, Bsz, seen = struct.unpack_from("<IIQ", data, 4)
        expected = 20 + sum(t.numel * 4 for t in self.tensors())
        if any(kind != "mamba1" for kind in self.cfg.layers):
            raise ValueError("this is a version-1 state snapshot (Mamba-1 only, no layer kinds "
                             "recorded); it cannot restore a model with "
                             f"{_runs(self.cfg.layers)} layers")
        if n != len(self.layers) or Bsz != self.Bsz or len(data) != expected:
            raise ValueError(f"snapshot is for {n} layers x batch {Bsz} ({len(data)} bytes); "
                             f"this model needs {len(self.layers)} x {self.Bsz} ({expected} bytes)")
        return 20, seen

    def release(self):
        packed = [self.packed] if self.packed is not None else []
        self.device.release_tensors(list(self.tensors()) + [self.pos] + packed)


def _runs(kinds):
    """['mamba2', 'mamba2', 'mamba1'] -> '2 x mamba2, 1 x mamba1'."""
    out = []
    for k in kinds:
        if out and out[-1][0] == k:
            out[-1][1] += 1
        else:
            out.append([k, 1])
    return ", ".join(f"{n} x {k}" for k, n in out) or "none"


class MambaModel:
    def __init__(self, device, cfg, weights):
        self.device, self.cfg, self.weights = device, cfg, weights
        self.adapter = None    # a LoRA adapter (py_engine/train/lora.py) attached, or None
        self.embed = weights[EMBED]
        self.norm_f = weights[NORM_F]
        self.lm_head = weights[EMBED] if cfg.tie_word_embeddings else weights[LM_HEAD]
        # one norm + mixer per logical layer, over its physical layer's weights (a virtual
        # schedule, py_engine/models/schedule.py, reuses them; gradients add up over the uses)
        order = logical_layers(cfg)
        self.norms = [weights[f"backbone.layers.{p}.norm.weight"] for p in order]
        self.mixers = [registry.get(cfg.layers[p]).Mixer(cfg, weights, f"backbone.layers.{p}.mixer.")
                       for p in order]
        # row blocks decode multiplies together, side by side in one buffer where the kind
        # asks for it (Mamba-3's in_proj, ops/weight_pack.py): the loader packs them already;
        # models made otherwise (training's fresh ones, checkpoints) here
        pack_model(device, cfg, weights)

    def new_state(self, Bsz=1, max_tokens=None):
        """A zero decode state; max_tokens sizes attention layers' KV caches (default the
        config's max_position_embeddings)."""
        return ModelState(self.device, self.cfg, Bsz, max_tokens)

    def release(self):
        self.device.release_tensors(self.weights.values())
        self.weights = {}

    # -- the two paths -------------------------------------------------------------------
    def forward(self, ctx, ids, Bsz=1, state=None, last_only=False):
        """ids: u32 Tensor [Bsz*T]. Returns logits [Bsz*T, V] (recorded into ctx.batch), or
        with last_only (prefill for generation) only each sequence's last row [Bsz, V],
        skipping the LM head on every other position.

        ctx: py_engine.autograd.functional.Ctx (with a tape when training). With `state`
        (inference), the sequences continue from it and leave their final state there."""
        cfg = self.cfg
        T = ids.numel // Bsz
        self._check_logits(Bsz if last_only and T > 1 else Bsz * T)
        if state is not None:
            for layer in state.layers:
                layer.tokens_seen = state.tokens_seen
        residual = F.embedding(ctx, ids, self.embed)                    # [Bsz*T, D]
        for i, mixer in enumerate(self.mixers):
            h = F.rmsnorm(ctx, residual, self.norms[i], cfg.layer_norm_epsilon)
            new = mixer.forward(ctx, h, residual, Bsz, T, state.layers[i] if state else None)
            ctx.done(h)
            if new is not residual:
                ctx.done(residual)
            residual = new
        if last_only and T > 1:
            residual = self._last_rows(ctx, residual, Bsz, T)
        h = F.rmsnorm(ctx, residual, self.norm_f, cfg.layer_norm_epsilon)
        ctx.done(residual)
        logits = F.linear(ctx, h, self.lm_head)                          # [Bsz*T, V]
        ctx.done(h)
        if state is not None:
            position.advance(ctx.batch, state.pos, T)
            state.tokens_seen += T
        return logits

    def _check_logits(self, rows):
        """Refuse, before recording anything, logits [rows, V] larger than one GPU binding
        (the LM head's weight may be split into row blocks; its output is one tensor)."""
        from py_engine.gpu.errors import DeviceLimitError
        from py_engine.gpu.row_chunks import binding_limit, limit_phrase, size_text
        V = self.lm_head.shape[0]
        limit = binding_limit(self.device)
        if rows * V * 4 > limit:
            raise DeviceLimitError(
                f"the logits of {rows} tokens x {V} vocabulary take {size_text(rows * V * 4)}, "
                f"more than {limit_phrase(self.device, limit)}: run at most "
                f"{limit // (4 * V)} tokens per pass (a shorter sequence or a smaller batch)")

    def _last_rows(self, ctx, x, Bsz, T):
        """Copy row T-1 of each sequence of x [Bsz*T, D] into a new [Bsz, D] tensor (buffer
        copies need 4-byte alignment only; a binding offset would need 256)."""
        D = x.shape[-1]
        out = Tensor(ctx.device, (Bsz, D))
        for b in range(Bsz):
            ctx.batch.copy(x.buffer, x.offset + ((b + 1) * T - 1) * D * 4, out.buffer,
                           out.offset + b * D * 4, D * 4)
        ctx.done(x)
        return out

    def step(self, batch, token, state, advance_position=True):
        """token: u32 Tensor [Bsz] (e.g. the last sampled ids). Returns logits [Bsz, V].
        advance_position False: the caller advances state.pos after the step (the Generator's
        recorded step does it in its sampler's control dispatch, sampling.advance)."""
        cfg = self.cfg
        Bsz = state.Bsz
        residual = embedding_forward(batch, token, self.embed)          # [Bsz, D]
        # Each pre-norm is handed over unevaluated (NormedRows): the input projections that
        # read it normalise on the fly. Mixers read h before they add into the residual.
        for i, mixer in enumerate(self.mixers):
            h = NormedRows(residual, self.norms[i], cfg.layer_norm_epsilon)
            mixer.step(batch, h, residual, Bsz, state.layers[i])
            h.release()
        h = NormedRows(residual, self.norm_f, cfg.layer_norm_epsilon)
        logits = linear_forward(batch, h, self.lm_head)                 # [Bsz, V]
        h.release()
        residual.release()      # after the LM head has read it through h
        if advance_position:
            position.advance(batch, state.pos, 1)
        state.tokens_seen += 1
        return logits

    # -- conveniences --------------------------------------------------------------------
    def ids_tensor(self, ids):
        bad = [i for i in ids if not 0 <= i < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.cfg.vocab_size})")
        return Tensor.from_list(self.device, (len(ids),), list(ids), "u32")

    async def logits(self, ids, state=None) -> bytes:
        """f32 bytes of logits [len(ids), V] through the parallel path."""
        t = self.ids_tensor(ids)
        batch = self.device.batch(stream=True)
        out = self.forward(Ctx(batch), t, 1, state)
        batch.submit()
        data = await out.to_bytes()
        out.release()
        t.release()
        return data

    async def step_logits(self, ids, state) -> bytes:
        """f32 bytes of logits [len(ids), V] by unrolling `step` token by token."""
        rows = []
        for i in ids:
            t = self.ids_tensor([i])
            batch = self.device.batch()
            out = self.step(batch, t, state)
            batch.submit()
            rows.append(await out.to_bytes())
            out.release()
            t.release()
        return b"".join(rows)
