"""Bidirectional wrappers of the Mamba mixers (kinds "bidi_mamba1", "bidi_mamba2",
"bidi_mamba3"), as burn-mamba's `bidi` modules define a bidirectional layer pair: a straight
block reads the sequence left to right, a second block with its own weights and pre-norm reads
it right to left (the sequence flipped in time, then its output flipped back), and the two are
merged before the skip connection:

    x [Bsz*T, D] (the residual stream)
    ys = M_fwd(norm(x))                               norm: the layer's own pre-norm weight
    yr = flip(M_rev(rev_norm(flip(x))))               flip: reverse each sequence's tokens
    out = x + merge(ys, yr)
        "mean"   merge = (ys + yr) / 2                (burn-mamba's OutputMerge::Mean)
        "concat" merge = [ys | yr] @ merge.weight^T + merge.bias, weight [D, 2D]
                 (burn-mamba's OutputMerge::CatLinear: Linear(2D -> D) with a bias)
The merge is a model-wide setting (config.json "mambaweb_bidirectional": {"merge": ...}).
Position t of the straight block has read tokens 0..t, of the reversed block tokens t..T-1.

Tensors of one layer (relative to backbone.layers.{i}.mixer.): fwd.<the inner kind's
tensors>, rev.<the same>, rev_norm.weight [D], and with "concat" merge.weight [D, 2D] and
merge.bias [D]. The layer's own backbone.layers.{i}.norm.weight is the straight block's norm.

Differences from burn-mamba, on purpose: one layer here holds a whole pair (burn-mamba pairs
two consecutive real layers), so a virtual schedule (py_engine/models/schedule.py) reuses whole
pairs with their merge; burn-mamba's StridedCyclic and similar schedules, which can pair the
straight block of one real layer with the reversed block of another, have no equivalent; and
its ignore_first/last_residual options (residual scale 0) are not offered.

Forward only: an output depends on later tokens, so there is no recurrent `step`, no decode
state and no generation (refused with BIDI_REFUSAL). Training uses a masked-token objective
(py_engine/train/masked.py).

Pure stdlib: this module is imported inside Pyodide.
"""
import math

from py_engine.autograd import functional as F
from py_engine.autograd import sequence as S
from py_engine.gpu.tensor import Tensor
from py_engine.nn.mamba1 import Mamba1
from py_engine.nn.mamba2 import Mamba2
from py_engine.nn.mamba3 import Mamba3
from py_engine.nn.registry import register, whole
from py_engine.ops.elementwise import fill

MERGES = ("mean", "concat")
BIDI_REFUSAL = ("this model has bidirectional layers: each output reads the tokens after it, "
                "so it cannot generate text one token at a time; use it for masked-token "
                "prediction or classification (`mambaweb pretrain --bidi` trains it on masked "
                "tokens)")
DIRECTIONS = ("fwd.", "rev.")


def merge_of(cfg):
    """The merge a model's bidirectional layers use ("mean" unless config.json says)."""
    return (cfg.bidirectional or {}).get("merge", "mean")


class BidiMixer:
    def __init__(self, cfg, weights, prefix, inner):
        self.fwd = inner.Mixer(cfg, weights, prefix + "fwd.")
        self.rev = inner.Mixer(cfg, weights, prefix + "rev.")
        self.rev_norm = weights.get(prefix + "rev_norm.weight")
        self.merge = merge_of(cfg)
        self.merge_w = weights.get(prefix + "merge.weight")
        self.merge_b = weights.get(prefix + "merge.bias")
        self.eps = cfg.layer_norm_epsilon

    @staticmethod
    def _branch(ctx, mixer, h, Bsz, T):
        """mixer's output without the skip connection: the inner mixers add into a residual,
        so they are handed a zero one. h [Bsz*T, D] -> [Bsz*T, D]."""
        zero = Tensor(ctx.device, h.shape)
        fill(ctx.batch, zero, 0.0)
        y = mixer.forward(ctx, h, zero, Bsz, T, None)
        if y is not zero:
            ctx.done(zero)
        return y

    def forward(self, ctx, h, residual, Bsz, T, state=None):
        """h = norm(residual) [Bsz*T, D] -> new residual [Bsz*T, D]."""
        if state is not None:
            raise ValueError(BIDI_REFUSAL)
        ys = self._branch(ctx, self.fwd, h, Bsz, T)                   # straight, [Bsz*T, D]
        xr = S.reverse(ctx, residual, Bsz, T)                          # x flipped in time
        hr = F.rmsnorm(ctx, xr, self.rev_norm, self.eps)
        ctx.done(xr)
        yr_flipped = self._branch(ctx, self.rev, hr, Bsz, T)
        ctx.done(hr)
        yr = S.reverse(ctx, yr_flipped, Bsz, T)                        # back in time order
        ctx.done(yr_flipped)
        if self.merge == "mean":
            out = S.mean_merge(ctx, residual, ys, yr)
        else:
            both = S.concat_columns(ctx, ys, yr, Bsz, T)               # [Bsz*T, 2D]
            out = F.residual_linear(ctx, both, self.merge_w, self.merge_b, residual)
            ctx.done(both)
        ctx.done(ys, yr)
        return out

    def step(self, batch, h, residual, Bsz, state):
        raise ValueError(BIDI_REFUSAL)


class BidiState:
    """No decode state exists: asking for one (generation, stateful prefill) is refused."""

    def __init__(self, device, cfg, Bsz=1, max_tokens=None):
        raise ValueError(BIDI_REFUSAL)


class _Bidi:
    """A bidirectional layer kind over `inner` (set by each subclass)."""
    inner = None
    mbjs_type = None          # MBJS has no bidirectional layers
    State = BidiState
    bidirectional = True

    @classmethod
    def Mixer(cls, cfg, weights, prefix):
        return BidiMixer(cfg, weights, prefix, cls.inner)

    @classmethod
    def spec(cls, cfg):
        return cls.inner.spec(cfg)

    @classmethod
    def validate(cls, cfg, source):
        cls.inner.validate(cfg, source)
        if merge_of(cfg) not in MERGES:
            raise ValueError(f"{source}: mambaweb_bidirectional.merge {merge_of(cfg)!r} is not "
                             f"one of {', '.join(MERGES)}")

    @classmethod
    def tensors(cls, cfg):
        D = cfg.hidden_size
        inner = cls.inner.tensors(cfg)
        out = {d + rel: shape for d in DIRECTIONS for rel, shape in inner.items()}
        out["rev_norm.weight"] = (D,)
        if merge_of(cfg) == "concat":
            out["merge.weight"] = (D, 2 * D)
            out["merge.bias"] = (D,)
        return out

    @staticmethod
    def _split(rel):
        for d in DIRECTIONS:
            if rel.startswith(d):
                return d, rel[len(d):]
        return None, rel

    @classmethod
    def pieces(cls, cfg, rel, shape):
        d, inner_rel = cls._split(rel)
        if d is None:
            return whole(rel, shape)
        return [(d + p, r0, r1, s) for p, r0, r1, s in cls.inner.pieces(cfg, inner_rel, shape)]

    @classmethod
    def init_rule(cls, cfg, rel, shape):
        """The inner kind's rules for both blocks; rev_norm 1; the merge as burn-mamba's (and
        PyTorch's) Linear default, U(+-1/sqrt(fan_in)) with fan_in 2D for weight and bias."""
        d, inner_rel = cls._split(rel)
        if d is not None:
            return cls.inner.init_rule(cfg, inner_rel, shape)
        if rel == "rev_norm.weight":
            return "const", 1.0, 0
        if rel in ("merge.weight", "merge.bias"):
            return "uniform", 1.0 / math.sqrt(2 * cfg.hidden_size), 0
        raise ValueError(f"no initialisation rule for {cls.name} tensor {rel}")

    @classmethod
    def hint(cls, cfg, rel):
        d, inner_rel = cls._split(rel)
        if d is not None:
            return cls.inner.hint(cfg, inner_rel)
        if rel.startswith("merge.") and merge_of(cfg) != "concat":
            return " (config.json mambaweb_bidirectional.merge is not 'concat')"
        return ""

    @classmethod
    def linear_piece(cls, rel):
        from py_engine.nn.registry import linear_piece
        d, inner_rel = cls._split(rel)
        return d is not None and linear_piece(cls.inner, inner_rel)

    @classmethod
    def wsla_pieces(cls, cfg):
        raise ValueError("WSLA is not defined for bidirectional layers")

    @classmethod
    def train_floats(cls, cfg, Bsz, T):
        """Both blocks' saved activations plus the flips, norms, zero residuals and merge."""
        return 2 * cls.inner.train_floats(cfg, Bsz, T) + 10 * Bsz * T * cfg.hidden_size


@register
class BidiMamba1(_Bidi):
    name = "bidi_mamba1"
    inner = Mamba1


@register
class BidiMamba2(_Bidi):
    name = "bidi_mamba2"
    inner = Mamba2


@register
class BidiMamba3(_Bidi):
    name = "bidi_mamba3"
    inner = Mamba3


def is_bidirectional(cfg):
    """Whether any layer of `cfg` is bidirectional (such a model has no step path)."""
    return any(k.startswith("bidi_") for k in cfg.layers)
