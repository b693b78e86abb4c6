"""Tape-based reverse-mode autograd over GPU tensors.

Every differentiable op called with a Tape runs its forward kernels and appends a backward
rule (a closure holding what it saved). `Tape.backward` walks the records once, newest first.
Gradients live in the tape keyed by tensor identity: a rule takes its output's gradient
(`pop`, which hands over ownership), computes input gradients, and `accumulate`s them;
intermediate gradients go back to the pool as soon as their consumer has run. Parameter
gradients accumulate into persistent buffers given by the trainer (`param_grads`), which
survive the tape (gradient accumulation over micro-batches just keeps adding).
With tape=None the same functional ops run forward only (no_grad), saving nothing.
"""
from py_engine.ops.elementwise import accumulate


class Tape:
    def __init__(self, device, param_grads=None):
        self.device = device
        self.records = []               # backward rules in forward order
        self.grads = {}                 # id(tensor) -> gradient Tensor (owned by the tape)
        self.param_grads = {id(p): g for p, g in (param_grads or {}).items()}
        self.frozen = set()             # ids of tensors that need no gradient
        self.saved = []                 # tensors kept alive for backward, released after it

    def record(self, rule):
        self.records.append(rule)

    def keep(self, *tensors):
        """Keep forward tensors until backward is done (then release them to the pool)."""
        self.saved.extend(t for t in tensors if t is not None)

    def needs_grad(self, t) -> bool:
        return t is not None and id(t) not in self.frozen

    def pop(self, t):
        """The gradient of `t` (ownership passes to the caller), or None if nothing flowed."""
        return self.grads.pop(id(t), None)

    def param_grad(self, t):
        """The persistent gradient buffer of parameter `t`, or None when `t` is not trained."""
        return self.param_grads.get(id(t))

    def accumulate(self, batch, t, g):
        """Add gradient `g` (owned by the caller until now) into `t`'s gradient."""
        if g is None or not self.needs_grad(t):
            if g is not None:
                g.release()
            return
        pg = self.param_grads.get(id(t))
        if pg is not None:
            accumulate(batch, pg, g)
            g.release()
            return
        prev = self.grads.get(id(t))
        if prev is None:
            self.grads[id(t)] = g
        else:
            accumulate(batch, prev, g)
            g.release()

    def backward(self, batch):
        for rule in reversed(self.records):
            rule(batch, self)
        self.records = []
        for g in self.grads.values():
            g.release()
        self.grads = {}
        for t in self.saved:
            t.release()
        self.saved = []
