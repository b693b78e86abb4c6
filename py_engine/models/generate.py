"""Generation: prefill the prompt with the parallel path, then decode with `step`.

The decode step (embedding -> layers -> LM head -> sampler) is recorded once, from a
private buffer pool, and replayed every token with one bridge call; per token the host
writes 16 bytes (the fed token, sampler step counter, history length, the token into the
repetition history) and reads 4 (the chosen id). Sampling runs on the GPU.
"""
import struct
from dataclasses import dataclass

from py_engine.gpu.tensor import Tensor
from py_engine.ops import sampling
from py_engine.autograd.functional import Ctx


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
    """Holds one sequence's decoding resources: state, token buffer, history, recording."""

    def __init__(self, model, sampling_cfg=None, max_tokens=4096, state=None):
        self.model = model
        self.device = model.device
        self.cfg = sampling_cfg or SamplingConfig()
        self.max_tokens = max_tokens
        self.state = state or model.new_state(max_tokens=max_tokens)
        self.token = Tensor(self.device, (1,), "u32")
        self.history = Tensor(self.device, (max_tokens,), "u32")
        self.ctl = sampling.make_control(self.device, 1)
        self.n_history = 0
        self.step_no = 0
        self._recording = None
        self.dispatches_per_token = None

    # -- history (repetition penalty) ----------------------------------------------------
    def _append_history(self, ids):
        ids = list(ids)[-(self.max_tokens - self.n_history):] if ids else []
        if not ids or self.n_history >= self.max_tokens:
            return
        self.device.write(self.history.buffer, struct.pack(f"<{len(ids)}I", *ids),
                          self.history.offset + 4 * self.n_history)
        self.n_history += len(ids)

    def _sample_kwargs(self):
        kw = self.cfg.kwargs()
        if self.cfg.repetition_penalty != 1.0:
            kw["history"] = self.history
        return kw

    # -- prefill -------------------------------------------------------------------------
    async def prefill(self, prompt_ids):
        """Run the prompt through the parallel path (continuing the state); sample the first
        new token into the token buffer and return it."""
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        ids_t = self.model.ids_tensor(prompt_ids)
        self._append_history(prompt_ids)
        sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])
        batch = self.device.batch()
        logits = self.model.forward(Ctx(batch), ids_t, 1, self.state, last_only=True)
        sampling.sample(batch, logits, self.ctl, out=self.token, **self._sample_kwargs())
        batch.submit()
        tok = struct.unpack("<I", await self.token.to_bytes())[0]
        logits.release()
        ids_t.release()
        self.step_no += 1
        return tok

    # -- decode --------------------------------------------------------------------------
    def _record_step(self):
        with self.device.private_pool() as pool:
            batch = self.device.batch()
            logits = self.model.step(batch, self.token, self.state)
            sampling.sample(batch, logits, self.ctl, out=self.token, **self._sample_kwargs())
            logits.release()
            self.dispatches_per_token = batch.dispatch_count
            self._recording = batch.record()
            self._pool = pool
        self.state.tokens_seen -= 1   # recording is not running

    async def decode_one(self, prev_token):
        """Feed `prev_token` and sample the next one."""
        cap = self.state.capacity
        if cap is not None and self.state.tokens_seen >= cap:
            raise ValueError(f"this conversation filled the attention KV cache ({cap} tokens): "
                             "start a new one, or allow more tokens when generating")
        if self._recording is None:
            self._record_step()
        # Usually the sampler already left it there; writing it makes any token (a restored
        # conversation, a user-chosen continuation) valid input.
        self.device.write(self.token.buffer, struct.pack("<I", prev_token), self.token.offset)
        self._append_history([prev_token])
        sampling.set_control(self.device, self.ctl, self.step_no, [self.n_history])
        self._recording.replay()
        self.state.tokens_seen += 1
        self.step_no += 1
        return struct.unpack("<I", await self.token.to_bytes())[0]

    async def stream(self, prompt_ids, max_new_tokens, stop_ids=(), cancelled=None):
        """Async iterator over new token ids (a stop id is yielded, then generation ends)."""
        tok = await self.prefill(prompt_ids)
        for i in range(max_new_tokens):
            yield tok
            if tok in stop_ids or i == max_new_tokens - 1 or (cancelled and cancelled()):
                return
            tok = await self.decode_one(tok)

    def release(self):
        for t in (self.token, self.history, self.ctl):
            t.release()
        self.state.release()
        self._recording = None


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
