"""Warming the GPU's L2 cache with a later dispatch's weights (shaders/lib/l2_warm.wgsl).

A decoded Mamba-1 layer at the 1.4b shape is four dispatches: in_proj + conv (33.5 MB of f16
weights), x_proj (1.3 MB), the scan step with dt_proj (1 MB) and out_proj (16.8 MB). The two
small ones are bound by their latency chains (4.1 and 3.8 us a layer, README's marginal
profile) and leave the memory bus idle; the two big ones then wait on DRAM. A warmed dispatch
gets extra workgroups that read a later dispatch's weights meanwhile, so those reads hit L2.

The plan names, per stage of the layer, what it warms: entries `stage:target` joined by ';'
(a bench variant's own list is comma-separated).
  stages:  x  the x_proj mat-vec (the 4-dispatch layer)
           s  the scan step
           o  the out_proj mat-vec (+ residual)
  targets: out  this layer's out_proj weight
           inx / inz / in  the next layer's in_proj x half / z half / both halves
A target may take a part `/a-b` in eighths (`inx/0-4`: its first half), for a window too short
for the whole matrix. `device.l2_warm` (tests), else MAMBAWEB_L2_WARM (bench variants), else
the rule (RULE below); `0` or `` turns it off.
"""
import os

STAGES = ("x", "s", "o")
TARGETS = ("out", "inx", "inz", "in")
RULE = ""                 # off until measured on a real GPU
WARM_STORAGE_BUFFERS = 14   # the scan step's warm entry: its 12 storage bindings and two ranges


def parse(text):
    """{stage: [(target, lo_eighth, hi_eighth)]} of a plan's text, or ValueError naming the
    entry and the form."""
    out = {}
    text = (text or "").strip()
    if text in ("", "0", "off"):
        return out
    for entry in (e.strip() for e in text.split(";") if e.strip()):
        try:
            stage, _, rest = entry.partition(":")
            target, _, part = rest.partition("/")
            lo, hi = (0, 8) if not part else (int(v) for v in part.split("-"))
            if stage not in STAGES or target not in TARGETS or not 0 <= lo < hi <= 8:
                raise ValueError
        except ValueError:
            raise ValueError(f"MAMBAWEB_L2_WARM entry {entry!r} is not stage:target[/a-b] with "
                             f"stage one of {', '.join(STAGES)}, target one of "
                             f"{', '.join(TARGETS)} and 0 <= a < b <= 8 eighths "
                             "joined by ';' (e.g. x:out;s:inx;o:inz/0-4)") from None
        out.setdefault(stage, []).append((target, lo, hi))
    return out


def plan(dev):
    """The plan in force on `dev` ({} where warming is off or cannot run: a CPU adapter, whose
    'L2' is this machine's caches, or fewer storage bindings than the warm entries take)."""
    from py_engine.ops.step_kernels import subgroup_gpu
    forced = getattr(dev, "l2_warm", None)
    text = forced if forced is not None else os.environ.get("MAMBAWEB_L2_WARM", RULE)
    p = parse(text)
    if not p:
        return p
    if dev.limits.get("maxStorageBuffersPerShaderStage", 8) < WARM_STORAGE_BUFFERS:
        return {}
    if forced is None and not subgroup_gpu(dev):
        return {}
    return p


def _range(dev, t, lo, hi):
    """Binding (buffer, offset, size) of eighths lo..hi of tensor t's bytes, the offset rounded
    down to the device's binding alignment and the size to 16 bytes (at least 16)."""
    buf, off, size = t.binding
    a = off + size * lo // 8
    a -= a % dev.align
    b = off + size * hi // 8
    n = max(16, (b - a) // 16 * 16)
    if a + n > buf.size:
        n = (buf.size - a) // 16 * 16
    return (buf, a, n)


def ranges(dev, stage, mixer, following):
    """Up to two bindings that `stage` of `mixer`'s decode step warms by the plan (the next
    layer's in_proj from `following`, the next layer's mixer or None), or None."""
    entries = plan(dev).get(stage)
    if not entries:
        return None
    nxt = getattr(following, "first_weights", lambda: ())()
    out = []
    for target, lo, hi in entries:
        if target == "out":
            ts = [getattr(mixer, "out_w", None)]
        elif target == "in":
            ts = list(nxt)
        else:
            ts = list(nxt[:1] if target == "inx" else nxt[1:2])
        out += [_range(dev, t, lo, hi) for t in ts if t is not None and hasattr(t, "binding")]
    return out[:2] or None


def bindings(dev, warm):
    """The two warm bindings (15, 16) for `warm` (one or two ranges): a missing second one is
    16 bytes of a placeholder."""
    from py_engine.ops._common import dummy
    w = list(warm)
    if len(w) == 1:
        w.append(dummy(dev))
    return w[:2]
