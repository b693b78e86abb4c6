"""Training a MambaModel on the GPU: loss, tape backward, AdamW, in one submit per step.

Batch layout: `ids` [Bsz, T] token ids; targets[b, t] = labels[b, t+1] (the next token,
as transformers' ForCausalLMLoss shifts them), the last position ignored (-100). The loss
is the mean cross-entropy over non-ignored targets. Gradient accumulation adds micro-batch
gradients (each scaled by 1/accum) before one optimizer step.
WSLA (the seeds' fast local adaptation): only the pieces each layer kind names as its
selective projection train (Mamba-1: x_proj's B and C rows); nothing else gets gradient
buffers or optimizer moments (Mamba-3: in_proj's B and C row blocks, GPU pieces of their
own, MIMO's ranks included). A kind may name rows of a piece instead (Mamba-2: rows
[I, I + 2GN) of in_proj's x|B|C piece): that piece trains under a row mask
(py_engine/train/wsla.py) that keeps its other rows exactly as they were.
"""
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.ops.elementwise import fill
from py_engine.train.adamw import AdamW, decays, lr_at
from py_engine.train.masked import MaskedTokens
from py_engine.autograd.tape import Tape
from py_engine.autograd.functional import Ctx, cross_entropy

IGNORE = -100


def shift_targets(labels, Bsz, T):
    """HF causal-LM shift: position t predicts labels[t+1]; the last position has no target."""
    out = []
    for b in range(Bsz):
        row = labels[b * T:(b + 1) * T]
        out.extend(list(row[1:]) + [IGNORE])
    return out


def _wsla_filter(cfg):
    """name -> trains under WSLA, asked of each layer's kind (its `wsla_pieces`: piece names,
    or (piece, row0, row1) for rows of a piece); `keep.rows(name)` is (row0, row1) or None."""
    from py_engine.io.hf_names import split_layer_name
    from py_engine.nn import registry
    allowed = []
    for kind in cfg.layers:
        entries = registry.get(kind).wsla_pieces(cfg)
        allowed.append({e[0]: tuple(e[1:]) for e in entries if isinstance(e, tuple)})
        allowed[-1].update({e: None for e in entries if isinstance(e, str)})

    def keep(name):
        i, rel = split_layer_name(name)
        return rel is not None and rel in allowed[i]

    def rows(name):
        i, rel = split_layer_name(name)
        return allowed[i].get(rel) if rel is not None else None
    keep.rows = rows
    return keep


class Trainer:
    def __init__(self, model, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                 max_grad_norm=1.0, warmup=0, total_steps=0, wsla=False, decay_filter=decays,
                 adapter=None):
        """adapter: a py_engine.train.lora.LoraAdapter attached to `model`: only its A/B
        tensors train (gradients and AdamW moments for them alone), the base stays frozen."""
        self.model = model
        self.device = model.device
        self.masking = MaskedTokens.of(model.cfg)   # None: next-token prediction
        self.base_lr, self.warmup, self.total_steps = lr, warmup, total_steps
        # Distinct tensors only: a tied LM head is the embedding tensor itself, so its two
        # gradient contributions land in one buffer.
        named = {}
        keep = _wsla_filter(model.cfg) if wsla else None
        if adapter is not None:
            if wsla:
                raise ValueError("choose LoRA or WSLA, not both")
            named = dict(adapter.params())
            keep = lambda name: False  # noqa: E731  (no base weight trains)
        # A weight held as row blocks (py_engine/gpu/row_chunks.py: a table past one GPU
        # binding) trains as one parameter per block, "<piece>#rows<r0>": gradients and
        # moments stay within the binding limit too; `blocks` maps them back to rows.
        self.blocks = {}
        for name, t in model.weights.items():
            if keep is not None and not keep(name):
                continue
            for sub, part, rows in _param_blocks(name, t):
                if all(part is not other for other in named.values()):
                    named[sub] = part
                    if rows is not None:
                        self.blocks[sub] = (name,) + rows
        self.params = named
        self.grads = {n: Tensor(self.device, p.shape) for n, p in named.items()}
        self.row_masks = []                # WSLA on rows of a piece (py_engine/train/wsla.py)
        if wsla:
            from py_engine.train.wsla import RowMask
            self.row_masks = [RowMask(self.device, p, self.grads[n], *keep.rows(n))
                              for n, p in named.items() if keep.rows(n)]
        trained = {id(p) for p in named.values()}
        self.frozen = [p for n, t in model.weights.items() for _, p, _ in _param_blocks(n, t)
                       if id(p) not in trained]
        self.opt = AdamW(self.device, named, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                         decay_filter=decay_filter)
        self.opt.blocks = self.blocks      # training states store a split piece's moments whole
        self.step_count = 0
        self.skipped = 0
        # test hook (issue 13): poison the next step -- "logits" (a NaN logit: loss and
        # gradients non-finite), "loss" (a NaN loss, gradients finite) or "grad" (a NaN in
        # one gradient after backward); cleared once used
        self.poison = None
        self._zero_grads()

    def _zero_grads(self, batch=None):
        own = batch is None
        batch = batch or self.device.batch()
        for g in self.grads.values():
            fill(batch, g, 0.0)
        if own:
            batch.submit()

    def accumulate(self, batch, ids, labels, Bsz, T, scale=1.0):
        """Record forward + backward of one micro-batch into `batch`; returns the loss tensor
        [2] = (mean loss, n_valid) (the caller reads it after submitting, then releases it)."""
        dev = self.device
        if self.masking is not None:    # bidirectional: masked tokens (train/masked.py)
            ids, targets = self.masking.apply(ids, Bsz, T, self.step_count)
        else:
            targets = shift_targets(labels, Bsz, T)
        ids_t = Tensor.from_list(dev, (Bsz * T,), list(ids), "u32")
        tgt_t = Tensor.from_list(dev, (Bsz * T,), targets, "i32")
        tape = Tape(dev, {self.params[n]: g for n, g in self.grads.items()})
        tape.frozen = {id(t) for t in self.frozen}
        ctx = Ctx(batch, tape)
        logits = self.model.forward(ctx, ids_t, Bsz)
        if self.poison == "logits":
            _poison(batch, logits)
        loss = cross_entropy(ctx, logits, tgt_t)
        if self.poison == "loss":
            _poison(batch, loss)
        if scale != 1.0:  # gradient accumulation: the CE rule seeds with `scale`
            rule = tape.records[-1]
            tape.records[-1] = lambda b, t: rule(b, t, scale)
        tape.backward(batch)
        logits.release()
        for t in (ids_t, tgt_t):
            t.release()
        return loss

    async def train_step(self, micro_batches, Bsz, T, lr=None):
        """One optimizer step over `micro_batches` = [(ids, labels), ...] (flat lists [Bsz*T]).

        Returns {"loss", "grad_norm", "lr", "skipped"}; a non-finite gradient skips the update
        (the gate inside the AdamW kernels) and is counted."""
        lr = lr if lr is not None else lr_at(self.step_count, self.base_lr, self.warmup,
                                             self.total_steps or 1 << 30)
        batch = self.device.batch(stream=True)
        self._zero_grads(batch)
        n = len(micro_batches)
        losses = [self.accumulate(batch, ids, labels, Bsz, T, 1.0 / n) for ids, labels in micro_batches]
        if self.poison == "grad":
            _poison(batch, next(iter(self.grads.values())))
        self.poison = None
        for mask in self.row_masks:
            mask.mask_grad(batch)
        # Forward and backward went to the GPU in chunks while they were recorded (a failure
        # there leaves the weights alone: the gradients are zeroed again next step); the update
        # goes whole, at submit, so no failure can leave some parameters stepped and others not.
        batch.stream = False
        self.opt.step(batch, self.grads, lr=lr, losses=losses)
        for mask in self.row_masks:
            mask.restore(batch)
        batch.submit()
        total = 0.0
        for loss in losses:
            mean, _count = struct.unpack("<2f", await loss.to_bytes())
            total += mean / n
            loss.release()
        norm, _scale, finite = await self.opt.read_gate()
        # The step index (and with it the LR schedule and the data order) moves on; a skipped
        # step changed no parameter and no moment on the GPU, and its AdamW count is undone.
        self.step_count += 1
        if not finite:
            self.skipped += 1
            self.opt.unstep()
        return {"step": self.step_count, "loss": total, "grad_norm": norm, "lr": lr,
                "skipped": not finite, "skipped_total": self.skipped}

    async def gradients(self, ids, labels, Bsz, T):
        """Loss and gradients at the current weights (no update): ({piece: bytes}, loss)."""
        batch = self.device.batch(stream=True)
        self._zero_grads(batch)
        loss = self.accumulate(batch, ids, labels, Bsz, T)
        for mask in self.row_masks:
            mask.mask_grad(batch)
        batch.submit()
        mean, _ = struct.unpack("<2f", await loss.to_bytes())
        loss.release()
        return join_blocks({n: await g.to_bytes() for n, g in self.grads.items()},
                           self.blocks), mean

    def trained_numel(self):
        """Numbers that train (a WSLA row mask counts its trained rows only)."""
        masked = {id(m.param): m.trained_numel for m in self.row_masks}
        return sum(masked.get(id(p), p.numel) for p in self.params.values())

    def release(self):
        self.opt.release()
        for g in self.grads.values():
            g.release()
        for mask in self.row_masks:
            mask.release()


def _param_blocks(name, t):
    """[(parameter name, Tensor, (r0, r1) or None)] of weight `name`: itself, or one per row
    block when it is held as RowChunks."""
    from py_engine.gpu.row_chunks import RowChunks
    if not isinstance(t, RowChunks):
        return [(name, t, None)]
    return [(f"{name}#rows{r0}", part, (r0, r1)) for r0, r1, part in t.parts]


def join_blocks(values, blocks):
    """{name: bytes} with the row blocks' entries ("<piece>#rows<r0>", `blocks` as
    Trainer.blocks) joined in row order under their piece's name."""
    out = {n: v for n, v in values.items() if n not in blocks}
    for sub in sorted((n for n in values if n in blocks), key=lambda n: blocks[n][1]):
        piece = blocks[sub][0]
        out[piece] = out.get(piece, b"") + values[sub]
    return out


def _poison(batch, t):
    """Record a NaN into element 0 of `t` (the non-finite test hook)."""
    fill(batch, Tensor(t.device, (1,), buffer=t.buffer, offset=t.offset), float("nan"))
