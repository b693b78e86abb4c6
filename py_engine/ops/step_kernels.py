"""Which decode-step kernel a family's one-token step runs: the thread-per-state-row kernels
(every backend; on SwiftShader, a CPU, their strided loads cost less than barriers would) or
the lanes kernels (several threads per state row, coalesced: real GPUs). Mamba-2's
ssd_step_lanes measured 1.5x faster end to end than its thread-per-row step on an H200
(mamba2-130m f16, README's decode tables)."""
import os

from py_engine.ops.linear import _matvec_ok


def lanes(dev, attr, env):
    """`device.<attr>` True/False (tests) decides, else the environment variable `env` = rows
    | lanes (benches), else the decode mat-vec's own test (linear._matvec_ok: a real GPU --
    subgroups, not a fallback adapter -- or `device.force_matvec`, which the real-GPU decode
    checks on lavapipe set: they run the lanes steps too) -> lanes."""
    forced = getattr(dev, attr, None)
    if forced is not None:
        return bool(forced)
    choice = os.environ.get(env, "")
    if choice in ("rows", "lanes"):
        return choice == "lanes"
    return _matvec_ok(dev)
