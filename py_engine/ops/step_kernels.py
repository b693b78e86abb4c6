"""How the engine picks between two kernels for one job: `choose` (a device flag for tests, an
environment variable for benches and sweeps, else the measured rule) -- shared by the scan's
lanes/classic forward, the decode mat-vec's staging of x, and the decode steps' lanes/rows
kernels (`lanes` below: Mamba-2's ssd_step_lanes measured 1.5x faster end to end than its
thread-per-row step on an H200, mamba2-130m f16, README's decode tables)."""
import os


def choose(dev, attr, env, on, off, rule):
    """True/False: `device.<attr>` when it is True/False (tests), else the environment variable
    `env` = `on` | `off` (benches, sweeps; any other value is refused by name), else rule()."""
    forced = getattr(dev, attr, None)
    if forced is not None:
        return bool(forced)
    v = os.environ.get(env, "").strip().lower()
    if v:
        if v not in (on, off):
            raise ValueError(f"{env} must be '{on}' or '{off}', got {v!r}")
        return v == on
    return bool(rule())


def pick(dev, attr, env, allowed, rule):
    """choose() for a numeric setting: `device.<attr>` when set (tests), else the environment
    variable `env` (benches, sweeps), else rule(); a set value must be one of `allowed` (ints),
    else it is refused by name."""
    v = getattr(dev, attr, None)
    if v is None:
        v = os.environ.get(env, "").strip() or None
    if v is None:
        return rule()
    if str(v) not in {str(a) for a in allowed}:
        raise ValueError(f"{env} must be one of {', '.join(map(str, allowed))}, got {v!r}")
    return int(v)


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
