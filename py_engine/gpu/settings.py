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


# Dawn's tiers of maxStorageBuffersPerShaderStage (src/dawn/native/Limits.cpp): Chrome rounds an
# adapter's limit down to one of them, so a tab sees 8, 10 or 16 whatever the GPU offers.
# Vulkan and D3D12 GPUs reach 16; every Metal device (each Mac) sits in the 10 tier, as does
# SwiftShader. Node's Dawn (the bench's --dawn) reports the NVIDIA adapter's 16.
STORAGE_TIERS = (8, 10, 16)
# The fewest the engine runs on: its scan and mat-vec kernels bind 9-10 (SwiftShader's 10 runs
# every path); below that a device is refused up front (storage_problem) rather than failing
# at its first pipeline.
MIN_STORAGE = 10


def storage_problem(limit):
    """The message refusing an adapter that binds `limit` storage buffers a shader stage, or
    None where the engine's kernels fit (MIN_STORAGE)."""
    if int(limit) >= MIN_STORAGE:
        return None
    return (f"this GPU's WebGPU adapter binds {int(limit)} storage buffers per shader stage and "
            f"mambaweb's kernels need {MIN_STORAGE} (Chrome gives 10 on every Mac and 16 on most "
            "Windows and Linux GPUs): open the page on another GPU or in another browser")


def storage_bindings(dev):
    """Storage buffers one shader stage may bind on `dev`: the device's limit, lowered by
    `device.storage_cap` (tests, tools/ab_decode settings) or MAMBAWEB_STORAGE_BINDINGS (bench
    variants) to one of Dawn's tiers -- so a GPU giving 16 times the kernels a Mac's tab would
    choose."""
    limit = int(dev.limits.get("maxStorageBuffersPerShaderStage", 8))
    cap = getattr(dev, "storage_cap", None)
    return capped_storage(limit) if cap is None else min(limit, _tier(cap))


def capped_storage(limit):
    """`limit` lowered to MAMBAWEB_STORAGE_BINDINGS where that is set: what a device is requested
    with (py_engine/gpu/native.py), so the backend itself refuses a kernel binding more."""
    cap = os.environ.get("MAMBAWEB_STORAGE_BINDINGS", "").strip()
    return min(int(limit), _tier(cap)) if cap else int(limit)


def _tier(cap):
    if str(cap) not in {str(t) for t in STORAGE_TIERS}:
        raise ValueError("MAMBAWEB_STORAGE_BINDINGS (device.storage_cap) must be one of "
                         f"{', '.join(map(str, STORAGE_TIERS))}, got {cap!r}")
    return int(cap)
