"""Warm the GPU's L2 with the weight the next decode dispatch reads, from extra workgroups of a
latency-bound dispatch before it (shaders/lib/l2_prefetch.wgsl). Decoding, Mamba-1's x_proj and
scan step each read a few MB and wait on memory latency, not bandwidth, while out_proj after
them streams its whole weight (16.8 MB at mamba-1.4b in f16) at ~60% of the bandwidth that
in_proj reaches. Read during the scan step, out_proj's weight is in the L2 when out_proj runs.

    plan(device, weight, threads) -> Prefetch(binding, constants, groups) or None

A kernel that takes one adds `groups` workgroups past its own, binds `binding` at 14 and sets
`constants` (PF_VEC4S); the results are the same bit for bit with or without.
"""
from collections import namedtuple

from py_engine.gpu.tensor import Tensor

Prefetch = namedtuple("Prefetch", "binding constants groups")

PF_TRIP = 8          # loads a thread issues at once (PF_TRIP in the shader)
TRIPS = 2            # trips a thread makes: the extra workgroups = words / (threads * 16)
MEGABYTE = 1 << 20
CAPS_MB = (0, 1, 4, 8, 12, 16, 24, 32, 48, 64)
DEFAULT_CAP_MB = 24  # about half the H100/H200's 50 MB L2: out_proj of every shape we decode


def cap_bytes(device):
    """How many bytes of the next weight to read ahead (0: none): `device.l2_prefetch_mb`
    (tests), else MAMBAWEB_L2_PREFETCH_MB (bench variants), else DEFAULT_CAP_MB on a GPU with
    hardware subgroups (step_kernels.subgroup_gpu: a real one, with an L2 worth warming) and 0
    on CPU adapters (SwiftShader, lavapipe), where the extra reads are only extra work."""
    from py_engine.ops.step_kernels import pick, subgroup_gpu
    mb = pick(device, "l2_prefetch_mb", "MAMBAWEB_L2_PREFETCH_MB", CAPS_MB,
              lambda: DEFAULT_CAP_MB if subgroup_gpu(device) else 0)
    return mb * MEGABYTE


SITES = ("scan", "xproj", "both", "nextin")
DEFAULT_SITE = "scan"


def site(device):
    """Which of Mamba-1's two latency-bound decode dispatches reads out_proj's weight ahead:
    "scan" (the scan step), "xproj" (x_proj's mat-vec) or "both" (the first half in x_proj,
    the rest in the scan step): `device.l2_prefetch_at` (tests), else MAMBAWEB_L2_PREFETCH_AT
    (bench variants), else DEFAULT_SITE."""
    import os
    v = getattr(device, "l2_prefetch_at", None) or os.environ.get("MAMBAWEB_L2_PREFETCH_AT", "")
    v = v.strip().lower() or DEFAULT_SITE
    if v not in SITES:
        raise ValueError(f"MAMBAWEB_L2_PREFETCH_AT must be one of {', '.join(SITES)}, got {v!r}")
    return v


def plan(device, weight, threads, at="scan"):
    """The prefetch by the dispatch `at` ("scan" or "xproj") of `weight` (a Tensor: its first
    cap_bytes, whole 16-byte words; with site "both" x_proj's half or the scan step's) by extra
    workgroups of `threads` threads, or None: not this dispatch's, no weight, prefetch off, or
    an empty range."""
    where = site(device)
    if not isinstance(weight, Tensor) or where not in (at, "both", "nextin"):
        return None
    words = min(weight.nbytes, cap_bytes(device)) // 16
    w0, w1 = 0, words
    if where == "both":           # split on a 256-byte boundary (bindings' offset alignment)
        half = words // 2 // 16 * 16
        w0, w1 = (0, half) if at == "xproj" else (half, words)
    count = w1 - w0
    if count < 16:
        return None
    buf, off, _ = weight.binding
    groups = -(-count // (threads * PF_TRIP * TRIPS))
    return Prefetch((buf, off + 16 * w0, 16 * count), {"PF_VEC4S": count}, groups)
