"""How the engine picks between two kernels for one job: `choose` (py_engine/gpu/settings.py: a
device flag for tests, an environment variable for benches and sweeps, else the measured rule) -- shared by the scan's
lanes/classic forward, the decode mat-vec's staging of x, and the decode steps' lanes/rows
kernels (`lanes` below: Mamba-2's ssd_step_lanes measured 1.5x faster end to end than its
thread-per-row step on an H200, mamba2-130m f16, README's decode tables)."""
from py_engine.gpu.settings import choose, pick  # noqa: F401 (used here and by callers)


def hardware(dev, attr, env):
    """choose(dev, attr, env, '1', '0', rule) with rule = a real GPU (not a CPU adapter:
    SwiftShader, lavapipe): the rule of the kernels that fill a big GPU's idle units and only
    cost a CPU adapter (Mamba-2's and Mamba-3's chunked forwards)."""
    return choose(dev, attr, env, "1", "0", lambda: not dev.info.get("is_fallback"))


def subgroup_gpu(dev):
    """A GPU whose subgroup operations are hardware: it offers `subgroups` and is not a CPU
    adapter (SwiftShader, lavapipe), which emulate them -- with the decode step's subgroup
    shuffles on, Chromium's SwiftShader decoded d256x4 ~40% slower and the CI suite took 33
    instead of 18 minutes. The rule of the kernels that only trade barriers for shuffles."""
    return "subgroups" in dev.features and not dev.info.get("is_fallback")


def lanes(dev, attr, env):
    """A decode step's lanes kernel (several threads per state row, coalesced) over its
    thread-per-row one: choose(..., 'lanes', 'rows', rule) with rule = the decode mat-vec's own
    test (linear._matvec_ok: a real GPU -- subgroups, not a fallback adapter -- or
    `device.force_matvec`, which the real-GPU decode checks on lavapipe set: they run the lanes
    steps too)."""
    from py_engine.ops.linear import _matvec_ok
    return choose(dev, attr, env, "lanes", "rows", lambda: _matvec_ok(dev))
