"""AdamW with global-norm clipping and non-finite skipping, all on the GPU.

One `step()` records, for every trainable tensor, a sum-of-squares partial; one finalize
pass turns them into the global norm, the clip scale and a finite flag (the "gate"); then
every tensor's update reads the gate. No readback is needed to decide anything; the
trainer reads the gate afterwards (with the loss) to report the norm and count skips.
Weight decay follows the reference trainers: only 2-D weight matrices decay (embedding,
LM head, in/x/dt/out projections), never conv weights, biases, norms, A_log or D.
"""
import math
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import fold, params
from py_engine.ops.elementwise import fill

PARTIAL_GROUPS = 64


def decays(name: str) -> bool:
    base = name.split("#")[0]
    return base.endswith(".weight") and not any(
        k in base for k in ("norm", "conv1d")) and base != "backbone.norm_f.weight"


class AdamW:
    def __init__(self, device, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, max_grad_norm=0.0, decay_filter=decays):
        """named_params: {name: Tensor}; moments are allocated only for these."""
        self.device = device
        self.params = dict(named_params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.max_grad_norm = weight_decay, max_grad_norm
        self.decay = {n: weight_decay if decay_filter(n) else 0.0 for n in self.params}
        self.t = 0
        self.m = {n: Tensor(device, p.shape) for n, p in self.params.items()}
        self.v = {n: Tensor(device, p.shape) for n, p in self.params.items()}
        self.partial = Tensor(device, (PARTIAL_GROUPS * len(self.params),))
        self.gate = Tensor(device, (4,))
        self.hyper = Tensor(device, (8,))
        self.losses = Tensor(device, (4,))     # the step's loss values, checked by the gate
        batch = device.batch()
        for t in list(self.m.values()) + list(self.v.values()) + [self.losses]:
            fill(batch, t, 0.0)
        batch.submit()

    def step(self, batch, grads, lr=None, losses=()):
        """Record one update. grads: {name: Tensor} for every parameter; losses: the step's
        loss tensors (value 0 of each is checked): a non-finite one skips the update like a
        non-finite gradient does. A skipped step must be undone with `unstep()` once read."""
        dev = self.device
        losses = list(losses)
        if len(losses) > self.losses.numel:
            self.losses.release()
            self.losses = Tensor(dev, (len(losses),))
        for i, loss in enumerate(losses):
            batch.copy(loss.buffer, loss.offset, self.losses.buffer, self.losses.offset + 4 * i, 4)
        self.t += 1
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        dev.write(self.hyper.buffer, struct.pack("<8f", lr, b1, b2, self.eps,
                                                 1 - b1 ** self.t, 1 - b2 ** self.t, 0, 0))
        names = list(self.params)
        fill(batch, self.partial, 0.0)   # tensors use only some of their slots
        for k, n in enumerate(names):
            g = grads[n]
            groups = max(1, min(PARTIAL_GROUPS, -(-g.numel // 4096)))
            u = dev.uniform(params(g.numel, k * PARTIAL_GROUPS, 0.0, 0.0))
            batch.run("adamw", "sumsq_partial", [u, g.binding, self.partial.binding], groups)
        fin = dev.uniform(params(len(names) * PARTIAL_GROUPS, len(losses), 0.0,
                                 float(self.max_grad_norm)))
        batch.run("adamw", "grad_norm_finalize", [fin, self.losses.binding, self.partial.binding,
                                                  self.gate.binding], 1)
        for n in names:
            p = self.params[n]
            u = dev.uniform(params(p.numel, 0, float(self.decay[n]), 0.0))
            gx, gy = fold(-(-p.numel // 256))
            batch.run("adamw", "adamw_step", [u, grads[n].binding, None, self.gate.binding,
                                              p.binding, self.m[n].binding, self.v[n].binding,
                                              self.hyper.binding], gx, gy)

    async def read_gate(self):
        """(grad norm before clipping, clip scale, finite) of the last step."""
        norm, scale, finite, _ = struct.unpack("<4f", await self.gate.to_bytes())
        return norm, scale, finite > 0.5

    def unstep(self):
        """The last step was skipped on the GPU (its gate said non-finite): the host's step
        count goes back too, so the next update's bias corrections are those of a run that
        never saw the skipped batch."""
        self.t -= 1

    def release(self):
        for t in list(self.m.values()) + list(self.v.values()) + [self.partial, self.gate, self.hyper,
                                                                   self.losses]:
            t.release()


def lr_at(step, base_lr, warmup, total, min_ratio=0.1):
    """Linear warmup for `warmup` steps, then cosine down to min_ratio * base_lr at `total`."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
