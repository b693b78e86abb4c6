"""MambaModel: embedding -> [RMSNorm -> mixer -> +residual] * L -> RMSNorm -> LM head.

The mixer of layer i is whatever kind the schedule names (cfg.layers[i]: "mamba1", "mamba2",
...); the registry (py_engine/nn/registry.py) supplies its Mixer and State classes.
Two paths that must agree (tests assert it):
  forward(ids)           parallel over the sequence (prefill, training)
  step(token, state)     recurrent, one token, constant memory (decode)
Falcon-Mamba is Mamba-1 with weightless norms on B, C, dt.
"""
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.models.names import EMBED, LM_HEAD, NORM_F
from py_engine.nn import registry
from py_engine.ops import elementwise as ew
from py_engine.ops.embedding import embedding_forward
from py_engine.ops.linear import linear_forward
from py_engine.ops.rmsnorm import rmsnorm_forward
from py_engine.autograd import functional as F
from py_engine.autograd.functional import Ctx


class ModelState:
    """The whole recurrent state: one state object per layer (its kind's State). Snapshots are
    plain bytes."""

    MAGIC = b"MWST"

    def __init__(self, device, cfg, Bsz=1):
        self.device, self.cfg, self.Bsz = device, cfg, Bsz
        self.layers = [registry.get(kind).State(device, cfg, Bsz) for kind in cfg.layers]
        self.tokens_seen = 0
        self.reset()

    def tensors(self):
        return [t for layer in self.layers for t in layer.tensors()]

    def reset(self):
        batch = self.device.batch()
        for t in self.tensors():
            ew.fill(batch, t, 0.0)
        batch.submit()
        self.tokens_seen = 0

    async def to_bytes(self) -> bytes:
        """MWST | u32 layers | u32 Bsz | u64 tokens_seen | each tensor's f32 bytes in order."""
        parts = [self.MAGIC, struct.pack("<IIQ", len(self.layers), self.Bsz, self.tokens_seen)]
        for t in self.tensors():
            parts.append(await t.to_bytes())
        return b"".join(parts)

    def load_bytes(self, data: bytes):
        if data[:4] != self.MAGIC:
            raise ValueError("not a mambaweb state snapshot (bad magic)")
        n, Bsz, seen = struct.unpack_from("<IIQ", data, 4)
        expected = 20 + sum(t.numel * 4 for t in self.tensors())
        if n != len(self.layers) or Bsz != self.Bsz or len(data) != expected:
            raise ValueError(f"snapshot is for {n} layers x batch {Bsz} ({len(data)} bytes); "
                             f"this model needs {len(self.layers)} x {self.Bsz} ({expected} bytes)")
        off = 20
        for t in self.tensors():
            self.device.write(t.buffer, data[off:off + t.numel * 4], t.offset)
            off += t.numel * 4
        self.tokens_seen = seen

    def release(self):
        for t in self.tensors():
            t.release()


class MambaModel:
    def __init__(self, device, cfg, weights):
        self.device, self.cfg, self.weights = device, cfg, weights
        self.embed = weights[EMBED]
        self.norm_f = weights[NORM_F]
        self.lm_head = weights[EMBED] if cfg.tie_word_embeddings else weights[LM_HEAD]
        self.norms = [weights[f"backbone.layers.{i}.norm.weight"] for i in range(cfg.num_hidden_layers)]
        self.mixers = [registry.get(kind).Mixer(cfg, weights, f"backbone.layers.{i}.mixer.")
                       for i, kind in enumerate(cfg.layers)]

    def new_state(self, Bsz=1):
        return ModelState(self.device, self.cfg, Bsz)

    def release(self):
        for t in self.weights.values():
            t.release()
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
            state.tokens_seen += T
        return logits

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

    def step(self, batch, token, state):
        """token: u32 Tensor [Bsz] (e.g. the last sampled ids). Returns logits [Bsz, V]."""
        cfg = self.cfg
        Bsz = state.Bsz
        residual = embedding_forward(batch, token, self.embed)          # [Bsz, D]
        for i, mixer in enumerate(self.mixers):
            h, rstd = rmsnorm_forward(batch, residual, self.norms[i], eps=cfg.layer_norm_epsilon)
            rstd.release()
            mixer.step(batch, h, residual, Bsz, state.layers[i])
            h.release()
        h, rstd = rmsnorm_forward(batch, residual, self.norm_f, eps=cfg.layer_norm_epsilon)
        rstd.release()
        residual.release()
        logits = linear_forward(batch, h, self.lm_head)                 # [Bsz, V]
        h.release()
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
        batch = self.device.batch()
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
