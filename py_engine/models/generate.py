"""Generation: prefill the prompt with the parallel path, then decode with `step`.

The decode step (embedding -> layers -> LM head -> sampler) is recorded once, from a
private buffer pool, and replayed every token with one bridge call; per token the host
writes 16 bytes (the fed token, sampler step counter, history length, the token into the
repetition history) and reads 4 (the chosen id). Sampling runs on the GPU.
"""
import functools
import math
import os
import struct
import time
from dataclasses import dataclass

from py_engine.gpu.tensor import Tensor
from py_engine.ops import sampling
from py_engine.autograd.functional import Ctx

DEPTH = 3      # decode groups in flight (Generator.depth)
RAMP = 1.5     # a stream's first groups grow by this factor up to `group` (ramp_sizes)
# group="auto": groups of up to AUTO_GROUP steps, each sized to take about AUTO_GROUP_MS by the
# time the last ones took (Generator.stream).
AUTO_GROUP = 32
AUTO_GROUP_MS = 40.0


def ramp_sizes(group, factor=RAMP):
    """The sizes of a stream's first groups, before every group is `group` steps: ceil of
    factor**i below `group` (1, 2, 3, 4, 6, 8, 12 for 16). The GPU waits for the host to
    encode a stream's first group, and its ids come back only when the whole group ran: a
    first group of 16 left an H200 idle ~16 host-steps (~17 ms at mamba-1.4b through Dawn) and
    held the second token back as long. Growing by 1.5 keeps the host's next group (1.5x the
    steps) within the GPU time of the ones queued when a step's host cost is up to ~1.5x its
    GPU time; faster growth idles the GPU between groups, slower launches more of them.
    factor <= 1: no ramp."""
    sizes, x = [], 1.0
    while factor > 1 and math.ceil(x - 1e-9) < group:
        k = math.ceil(x - 1e-9)
        if not sizes or k > sizes[-1]:
            sizes.append(k)
        x *= factor
    return sizes


def _env_number(name, default, whole=False):
    """The bench's side-by-side setting `name` (a whole number, or any number), else default."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        if whole and not text.isdigit():
            raise ValueError(text)
        return int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind}, got {text!r}") from None


@dataclass
class SamplingConfig:
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d):
        d = dict(d or {})
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def kwargs(self):
        return dict(greedy=self.greedy, temperature=self.temperature, top_k=self.top_k,
                    top_p=self.top_p, repetition_penalty=self.repetition_penalty, seed=self.seed)


class Generator:
    """Holds one sequence's decoding resources: state, token buffer, history, recordings.

    Every sampling (prefill's and each step's) is followed on the GPU by `sampling.advance`
    (in the sampler's last dispatch: sampling.fold_control): the step counter moves and the
    sampled id joins the repetition history, so recorded steps chain without the host. The
    host mirrors those counters (`step_no`, `n_history`).

    `stream` decodes in groups of `group` steps (the first few smaller: `ramp`): one submit per
    group (the step recording replayed k times, each sampled id put in a ring), with
    `depth` groups queued on the GPU while the oldest one's ids are read back and handed out
    (the next group is queued as soon as they arrive, before the consumer sees them, so a slow
    consumer or a late readback does not leave the GPU idle). A stop id (or a cancel) found
    inside a group rolls the state back to the group's start (a GPU copy made by the group
    itself) and re-runs the steps up to it, so the state is exactly the one a token-by-token
    decode leaves.
    """

    def __init__(self, model, sampling_cfg=None, max_tokens=4096, state=None, group=8, depth=None,
                 ramp=None):
        self.model = model
        self.device = model.device
        self.cfg = sampling_cfg or SamplingConfig()
        self.max_tokens = max_tokens
        # group: steps per submit, or "auto": up to AUTO_GROUP, each group sized to take about
        # group_ms by the steps' measured time -- a fast GPU gets long groups (groups of 32
        # decoded 3-9% faster than 16 on an H200), a slow one short ones (a cancel or a stop
        # waits for the queued groups: `depth` x group_ms at most).
        self.group_ms = None
        if group == "auto":
            group, self.group_ms = AUTO_GROUP, AUTO_GROUP_MS
        self.group = max(1, int(group))
        # Groups in flight. Two (one running, one queued) left the H200 idle 16-27% of a
        # streamed token at mamba-130m and the 1.4b f16 shape (README: gpu_busy): the ids of a
        # finished group arrive late (mapAsync's callback) while the host encodes the next
        # group's ~1,600 dispatches.
        # MAMBAWEB_DECODE_DEPTH: the bench's side-by-side (--variant) of other depths.
        if depth is None:
            depth = _env_number("MAMBAWEB_DECODE_DEPTH", DEPTH, whole=True)
        self.depth = max(1, int(depth))
        # The first groups' sizes of every stream (ramp_sizes; () for none). Default: on, or
        # MAMBAWEB_DECODE_RAMP (the growth factor; 0 = off) for the bench's side by side.
        if ramp is None:
            ramp = ramp_sizes(self.group, _env_number("MAMBAWEB_DECODE_RAMP", RAMP))
        self.ramp = tuple(int(k) for k in ramp if 0 < int(k) < self.group)
        self._slots = self.depth + 1   # the groups in flight + the one being read: a shadow each
        self.state = state or model.new_state(max_tokens=max_tokens)
        self.token = Tensor(self.device, (1,), "u32")
        self.history = Tensor(self.device, (max_tokens,), "u32")
        self.ctl = sampling.make_control(self.device, 1)
        self.n_history = 0
        self.step_no = 0
        self.last_token = None         # the id the sampler last left in `token` (read back)
        self._recording = None
        self._pool = None              # the private pool the step recording's buffers came from
        self._recorded_for = None      # the sampling settings the recording has baked in
        self._groups = {}              # slot -> Recording of `group` chained steps
        # The sampled ids of the groups in flight: the decode's counters (in the sampler's last
        # dispatch, or their own: sampling.sample's then_advance) write step s's id at s % R
        # and s % R + R (R = slots x group), so any group's ids are one contiguous read, and no
        # copy after each step ends the compute pass.
        self._ring_len = self._slots * self.group
        self._ring = Tensor(self.device, (2 * self._ring_len,), "u32")
        self._shadow = None            # per slot: copies of the rollback tensors + position
        self._backup = None            # copies of the state a prefill overwrites (_back_up_state)
        self.dispatches_per_token = None
        self._abandoned = None         # how to end a stream left mid-way (_settle)
        # A list to log the stream's timeline into (the bench's decode split), else None:
        # ("launch", start, end, k) per group queued, ("wait", start, end) per wait for ids
        # (time.perf_counter seconds).
        self.timeline = None

    # -- history (repetition penalty) ----------------------------------------------------
    def _append_history(self, ids):
        ids = list(ids)[-(self.max_tokens - self.n_history):] if ids else []
        if not ids or self.n_history >= self.max_tokens:
            return
        self.device.write(self.history.buffer, struct.pack(f"<{len(ids)}I", *ids),
                          self.history.offset + 4 * self.n_history)
        self.n_history += len(ids)

    def _sampled(self, k=1):
        """Mirror k GPU-side advances (decode_control.wgsl): steps counted, ids appended."""
        self.step_no += k
        self.n_history = min(self.max_tokens, self.n_history + k)

    def _sample_kwargs(self):
        kw = self.cfg.kwargs()
        if self.cfg.repetition_penalty != 1.0:
            kw["history"] = self.history
        return kw

    def _sample(self, batch, logits, pos=None):
        # the counters advance in the sampler's last dispatch (sampling.fold_control), which
        # also puts the id in the ring
        sampling.sample(batch, logits, self.ctl, out=self.token,
                        then_advance=(self.history, pos, self._ring), **self._sample_kwargs())

    # -- prefill -------------------------------------------------------------------------
    async def prefill(self, prompt_ids):
        """Run the prompt through the parallel path (continuing the state); sample the first
        new token into the token buffer and return it."""
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        self._settle()
        ids_t = self.model.ids_tensor(prompt_ids)
        before = (self.n_history, self.state.tokens_seen)
        self._append_history(prompt_ids)
        sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])
        batch = self.device.batch(stream=True)
        backup = self._back_up_state(batch)
        try:
            logits = self.model.forward(Ctx(batch), ids_t, 1, self.state, last_only=True)
            self._sample(batch, logits)
        except BaseException:
            self._restore_state(batch, backup, *before)
            ids_t.release()
            raise
        batch.submit()
        tok = struct.unpack("<I", await self.token.to_bytes())[0]
        logits.release()
        ids_t.release()
        self._sampled()
        self.last_token = tok
        return tok

    def _back_up_state(self, batch):
        """Copies of the state a prefill overwrites, recorded first into its streaming batch:
        the batch goes to the GPU in chunks while it is recorded, so a recording that fails
        part-way (out of memory for a new activation, a binding past the device's limit) has
        already run some layers. The copies (kept for the next prefill) put the state back.
        A batch that does not stream (software adapters) runs nothing before its submit, so
        there is nothing to put back: no copies."""
        if not batch.stream:
            return []
        tensors = self.state.overwritten_spans()
        if self._backup is None:
            self._backup = [Tensor(self.device, t.shape) for t in tensors]
        for t, b in zip(tensors, self._backup):
            batch.copy(t.buffer, t.offset, b.buffer, b.offset, t.nbytes)
        return list(zip(tensors, self._backup))

    def _restore_state(self, batch, backup, n_history, tokens_seen):
        """After a prefill's recording failed: drop what was not submitted and, when some of it
        ran, copy the state back and set the position again; the prompt leaves the history."""
        from py_engine.ops import position
        ran = batch.streamed
        batch.discard()
        if ran:
            undo = self.device.batch()
            for t, b in backup:
                undo.copy(b.buffer, b.offset, t.buffer, t.offset, t.nbytes)
            undo.submit()
            position.set_positions(self.device, self.state.pos, tokens_seen)
        self.n_history = n_history
        self.state.tokens_seen = tokens_seen

    # -- decode --------------------------------------------------------------------------
    def _ensure_recording(self):
        """Record the step graph, again whenever the sampling settings changed since (they
        are baked into the recorded sampler's uniforms: a conversation may switch from
        sampling to greedy between turns)."""
        key = tuple(sorted(self.cfg.kwargs().items()))
        if self._recording is None or key != self._recorded_for:
            self._record_step()
            self._groups = {}
            self._recorded_for = key

    def _record_step(self):
        self._drop_recordings()
        with self.device.private_pool() as pool:
            batch = self.device.batch()
            # the position advances in the sampler's control dispatch (one fewer a token)
            logits = self.model.step(batch, self.token, self.state, advance_position=False)
            self._sample(batch, logits, pos=self.state.pos)
            logits.release()
            self.dispatches_per_token = batch.dispatch_count
            self._recording = batch.record()
            self._pool = pool
        self.state.tokens_seen -= 1   # recording is not running

    def _check_room(self, k):
        cap = self.state.capacity
        if cap is not None and self.state.tokens_seen + k > cap:
            raise ValueError(f"this conversation filled the attention KV cache ({cap} tokens): "
                             "start a new one, or allow more tokens when generating")

    def _feed(self, prev_token):
        """Make `prev_token` the next step's input. The sampler left (and the history holds)
        `last_token`; another id (a restored conversation, a chosen continuation) replaces it
        in both, so the history reads as the tokens actually fed."""
        if prev_token != self.last_token:
            if self.last_token is not None and self.n_history > 0:
                self.n_history -= 1
            self._append_history([prev_token])
        self.device.write(self.token.buffer, struct.pack("<I", prev_token), self.token.offset)
        sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])

    async def decode_one(self, prev_token):
        """Feed `prev_token` and sample the next one (one step, read back at once)."""
        self._settle()
        self._check_room(1)
        self._ensure_recording()
        self._feed(prev_token)
        self._recording.replay()
        self.state.tokens_seen += 1
        self._sampled()
        self.last_token = struct.unpack("<I", await self.token.to_bytes())[0]
        return self.last_token

    def _rollback_tensors(self):
        """The state a group may have to undo: every layer's recurrent tensors (packed in one
        buffer: one copy, ModelState.overwritten_spans) and the position. KV caches need no
        copy: a slot past the position is never read, and the re-run rewrites it."""
        return self.state.overwritten_spans() + [self.state.pos]

    def _group_recording(self, slot):
        """The recording of a whole group in slot `slot`: the rollback tensors copied to
        the slot's shadow, then `group` times the step (which puts its id in the ring). A
        group of k steps replays its first k steps (_group_commands(k))."""
        rec = self._groups.get(slot)
        if rec is not None:
            return rec
        if self._shadow is None:
            self._shadow = [[Tensor(self.device, t.shape, t.dtype)
                             for t in self._rollback_tensors()] for _ in range(self._slots)]
        cmds = [(1, t.buffer, t.offset, s.buffer, s.offset, t.nbytes)
                for t, s in zip(self._rollback_tensors(), self._shadow[slot])]
        cmds += self._recording.commands * self.group
        from py_engine.gpu.batch import Recording
        rec = self._groups[slot] = Recording(self.device, cmds)
        return rec

    def _group_commands(self, k):
        """How many leading commands of a group recording run k steps: the shadow copies,
        then k times the step."""
        return len(self._shadow[0]) + k * len(self._recording.commands)

    def _ring_range(self, g):
        """(byte offset, size) of group g's ids in the ring: from its first step's."""
        return self._ring.offset + 4 * (g.step_no % self._ring_len), 4 * g.k

    def _launch(self, k, slot, first_input):
        """Queue k chained steps (one submit) and the read of their ids; returns the group."""
        self._check_room(k)
        if first_input is not None:
            self._feed(first_input)
        t0 = time.perf_counter() if self.timeline is not None else None
        g = _Group(slot, k, self.state.tokens_seen, self.step_no, self.n_history)
        self._group_recording(slot).replay(self._group_commands(k))
        g.ids = self.device.read_begin(self._ring.buffer, *self._ring_range(g))
        self.state.tokens_seen += k
        self._sampled(k)
        if t0 is not None:
            self.timeline.append(("launch", t0, time.perf_counter(), k))
        return g

    def _rollback(self, g, inputs):
        """Restore the state at group g's start and re-run its steps on `inputs` (the ids it
        fed, in order): the token-by-token decode's state after them, whatever ran since."""
        batch = self.device.batch()
        for t, s in zip(self._rollback_tensors(), self._shadow[g.slot]):
            batch.copy(s.buffer, s.offset, t.buffer, t.offset, t.nbytes)
        batch.submit()
        self.state.tokens_seen, self.step_no, self.n_history = g.tokens_seen, g.step_no, g.n_history
        # the sampler's control too: the groups that ran on advanced it on the GPU
        sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])
        for tok in inputs:
            self.device.write(self.token.buffer, struct.pack("<I", tok), self.token.offset)
            sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])
            self._recording.replay()
            self.state.tokens_seen += 1
            self._sampled()

    async def stream(self, prompt_ids, max_new_tokens, stop_ids=(), cancelled=None):
        """Async iterator over new token ids (a stop id is yielded, then generation ends).
        The state afterwards holds every yielded id but the last, as if decoded one by one."""
        tok = await self.prefill(prompt_ids)
        yield tok
        if max_new_tokens <= 1 or tok in stop_ids or (cancelled and cancelled()):
            return
        self._ensure_recording()
        remaining, slot = max_new_tokens - 1, 0
        sizes = list(self.ramp)          # the first groups' sizes, then `group` each
        step_ms = None                   # group="auto": the measured time of a step
        last_arrival = None
        inflight = []
        first = fed = tok            # fed: the input of the next group to be read

        def refill():
            # Slots go round-robin over depth + 1: the groups in flight and the one whose ids
            # are being handed out (a stop inside it restores its slot's shadow) never share one.
            nonlocal first, slot, remaining
            while remaining > 0 and len(inflight) < self.depth and not (cancelled and cancelled()):
                k = sizes.pop(0) if sizes else self.group
                if step_ms is not None:
                    k = min(k, max(1, int(self.group_ms / step_ms)))
                k = min(k, remaining)
                inflight.append(self._launch(k, slot, first))
                first, slot, remaining = None, (slot + 1) % self._slots, remaining - k

        try:
            while remaining > 0 or inflight:
                refill()
                if not inflight:
                    return
                g = inflight.pop(0)
                t0 = time.perf_counter() if self.timeline is not None else None
                raw = await g.ids
                if t0 is not None:
                    self.timeline.append(("wait", t0, time.perf_counter()))
                if self.group_ms is not None:
                    # groups run back to back once queued: the time between two groups' ids
                    # arriving is the later group's (the GPU's or the host's, the slower)
                    now = time.perf_counter()
                    if last_arrival is not None:
                        step_ms = 1000 * (now - last_arrival) / g.k
                    last_arrival = now
                ids = list(struct.unpack(f"<{g.k}I", raw))
                g.ids = None
                if not any(t in stop_ids for t in ids):
                    refill()                # before the consumer sees g's ids
                self.last_token = ids[-1]
                for j, t in enumerate(ids):
                    # a consumer that leaves here (break) without a stop or a cancel: the next
                    # prefill / stream / decode_one first ends the decode after t (_settle)
                    self._abandoned = functools.partial(self._end_after, g, j, ids, fed, inflight)
                    yield t
                    self._abandoned = None
                    if t in stop_ids or (cancelled and cancelled()):
                        self._end_after(g, j, ids, fed, inflight)
                        return
                fed = ids[-1]
        finally:
            for g in inflight:       # finish reads still pending (their staging buffers)
                if g.ids is not None:
                    await g.ids

    def _end_after(self, g, j, ids, fed, inflight):
        """Leave exactly the token-by-token state after ids[j] of group g was handed out (every
        id before it fed), whatever ran since."""
        if j < len(ids) - 1:            # steps ran past it: undo them
            self._rollback(g, [fed] + ids[:j])
        elif inflight:                  # it ended its group: the next one's start
            self._rollback(inflight[0], [])
        self.last_token = ids[j]

    def _settle(self):
        """End a stream its consumer left without a stop or a cancel (its groups ran on)."""
        end, self._abandoned = self._abandoned, None
        if end is not None:
            end()

    def release(self):
        own = [self.token, self.history, self.ctl, self._ring] + (self._backup or [])
        if self._shadow is not None:
            own += [t for ts in self._shadow for t in ts]
        self.device.release_tensors(own)
        self.state.release()
        self._drop_recordings()

    def _drop_recordings(self):
        """Forget the recorded step (and its groups) and destroy the buffers it drew from its
        private pool, with the bind groups naming them: nothing of a released or re-recorded
        graph stays on the device."""
        self._recording = None
        self._groups = {}
        if self._pool is not None:
            self.device.release_pool(self._pool)
            self._pool = None


@dataclass
class _Group:
    """A queued group of decode steps: where its ids go, and the counters at its start."""
    slot: int
    k: int
    tokens_seen: int
    step_no: int
    n_history: int
    ids: object = None        # the pending read of its k sampled ids


async def generate(model, prompt_ids, max_new_tokens, sampling_cfg=None, stop_ids=(),
                   on_token=None):
    """All new ids at once (convenience around Generator.stream)."""
    gen = Generator(model, sampling_cfg, max_tokens=len(prompt_ids) + max_new_tokens + 1)
    out = []
    try:
        async for tok in gen.stream(prompt_ids, max_new_tokens, stop_ids):
            out.append(tok)
            if on_token:
                on_token(tok)
    finally:
        gen.release()
    return out
