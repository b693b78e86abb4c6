"""Loop-pass budget of one shader invocation, and windows that keep every dispatch within it.

Why: lavapipe (Mesa's llvmpipe Vulkan driver: the CPU adapter of the native backend and CI, and
what Firefox/wgpu use on a machine without a GPU) gives each shader invocation -- in fact each
8-lane SIMD group, so the busiest lane counts -- ONE loop counter shared by all of its loops
(LP_MAX_TGSI_LOOP_ITERATIONS = 65535, gallivm/lp_bld_ir_common.c). Every pass through any loop's
end decrements it; at 0 every loop exits after its current pass, silently: the kernel simply
stops doing its work and the output is wrong with no error. Real GPUs and SwiftShader have no
such counter. A kernel whose one invocation walks a long axis (keys of a long prompt, the rows
of a big batch, a long chunk) therefore splits that walk over several dispatches ("windows")
whose passes stay within LOOP_PASS_BUDGET -- half the limit, so a pass estimate low by up to 2x
still holds. Short inputs keep one dispatch. shaders/LOOP_BUDGET.md has the audit of every kernel.

Pass counting: a loop that runs k times makes k + 1 passes (the last one exits); loops whose
trip count the compiler knows may be unrolled and cost nothing, but the estimates here never
rely on that. Measured on lavapipe (Mesa 22.3): `for (i < n)` alone stops at exactly 65535.
"""
from py_engine.ops.mamba3_windows import LOOP_PASS_BUDGET, LOOP_PASS_LIMIT  # noqa: F401

ALIGN_ROWS = 64   # window starts in rows (or k): 64 * 4 bytes keeps binding offsets 256-aligned


def window_len(per_unit, fixed=64, align=1):
    """Units (tokens, rows, keys) one dispatch may walk when each costs `per_unit` passes and the
    dispatch `fixed` more, rounded down to a multiple of `align` (at least `align`)."""
    n = max(1, (LOOP_PASS_BUDGET - fixed) // max(1, int(per_unit)))
    return max(align, n - n % align)


def spans(total, step):
    """[(start, count)] covering [0, total) in steps of `step` ([(0, total)] when it fits)."""
    total, step = int(total), max(1, int(step))
    return [(s, min(step, total - s)) for s in range(0, max(total, 1), step)]


def shifted(binding, nbytes):
    """A (buffer, offset, size) binding moved `nbytes` into its buffer (nbytes 256-aligned)."""
    buf, off, size = binding
    if nbytes % 256:
        raise ValueError(f"binding shift {nbytes} bytes is not 256-byte aligned")
    return (buf, off + nbytes, max(4, size - nbytes))
