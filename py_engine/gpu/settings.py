"""How the engine picks a setting that measurements decide: a device attribute (tests), else an
environment variable (benches, sweeps, side-by-side variants), else the measured rule. Here in
gpu/, beside the device, because the device's own choices (Device.batch's streaming) take them
too; py_engine/ops/step_kernels.py names the kernels' choices made with them."""
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
