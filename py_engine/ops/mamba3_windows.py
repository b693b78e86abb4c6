"""Token windows for the Mamba-3 scans: how many tokens one dispatch may walk.

Why: lavapipe (Mesa's llvmpipe Vulkan driver, the CPU adapter the native backend and CI use) gives
each shader invocation ONE loop counter shared by all of its loops (gallivm's loop limiter,
LP_MAX_TGSI_LOOP_ITERATIONS = 65535, src/gallium/auxiliary/gallivm/lp_bld_ir_common.c): every
pass through any loop's end decrements it, and once it reaches 0 every loop exits after its
current pass -- silently, the kernel just stops doing its work. A Mamba-3 scan walks the whole
sequence in one invocation (O(T * N) loop passes), so a single dispatch went wrong from token ~99
at N = 128 (serial), ~336 (chunked, L = 8) and ~30 in the backward. Real GPUs and SwiftShader have
no such counter; splitting the walk into windows is correct (the states carry between windows
through their buffers) and costs one dispatch per window everywhere.

The pass counts below follow the kernels' loops (shaders/mamba3_forward.wgsl, mamba3_backward.wgsl)
for the busiest thread: a loop that runs k times makes k + 1 passes (the last one breaks). They
were checked against where lavapipe's results went wrong (serial: 656 estimated vs ~659 observed
per token at N 128; chunked: 1571 vs ~1560 per 8-token chunk, MIMO's chunks likewise). Windows
keep the total at half the limit (LOOP_PASS_BUDGET), so an estimate that is low by up to 2x still
stays correct.
"""

LOOP_PASS_LIMIT = 65535
LOOP_PASS_BUDGET = LOOP_PASS_LIMIT // 2
WG = 64   # threads per workgroup (the shaders' WG)


def _per_thread(n):
    """Passes of `for (i = lid; i < n; i += WG)` for the busiest thread."""
    return -(-n // WG) + 1


def serial_passes_per_token(N, P, S, R=1):
    """mamba3_scan, one token: phi, rotate_kq, then per state row p: R-loops and the n loop (with
    two R-loops inside)."""
    rows = -(-P // WG)
    per_row = 3 * (R + 1) + (N + 1) + 2 * N * (R + 1)
    return 1 + _per_thread(S) + _per_thread(R * N) + rows + 1 + rows * per_row


def chunk_passes_per_chunk(L, N, P, S, R=1):
    """mamba3_chunk_scan, one chunk of L tokens of rank R (SISO: 1): phases (1) to (5) and the
    k_prev copy. The rank loops have a constant trip count (the RANK pipeline constant) and are
    unrolled: they make no passes (observed: 1560 / 1040 / 780 per chunk where lavapipe went wrong
    at N 128, P 8, S 32 for R 1 / 2 / 4, against 1571 / 1041 / 779 here)."""
    LR = L * R
    phase1 = -(-S // WG) * (L + 2) + 1
    phase2 = _per_thread(L * R * N)
    phase3 = 2 * (L + 1) + _per_thread(L)   # thread 0's rows, after token_rows
    phase4 = -(-(LR * LR) // WG) * (N + L + 2) + 1
    rows = -(-P // WG)
    per_row = (L + 1) + (LR + 1) + (N + 1) + N * (L + 1) + (LR + 1) + LR * (LR + 1)
    return 1 + phase1 + phase2 + phase3 + phase4 + rows + 1 + rows * per_row + _per_thread(R * N)


def bwd_forward_passes_per_token(N, P, S, R=1):
    """mamba3_bwd_scan phase A (the forward again), one token."""
    rows = -(-P // WG)
    per_row = (R + 1) + (N + 1) * (R + 2)
    return 1 + _per_thread(S) + _per_thread(R * N) + rows + 1 + rows * per_row


def bwd_reverse_passes_per_token(N, P, S, R=1):
    """mamba3_bwd_scan phase B (reverse time), one token: (1) rows x n with R-loops, (2) (r, n) x
    p, (3) angle pairs x R and the pass-through dims, (4) thread 0's sums over p and S."""
    rows = -(-P // WG)
    step1 = rows + 1 + rows * (2 * (R + 1) + (N + 1) * (1 + 2 * (R + 1)))
    step2 = _per_thread(R * N) * (P + 2)
    step3 = -(-S // WG) * (R + 2) + 1 + _per_thread(R * N)
    step4 = (P + 1) + (S + 1)
    return 1 + step1 + step2 + step3 + step4


def bwd_recompute_passes_per_token(N, P, R=1):
    """mamba3_bwd_scan phase B's recompute_chunk, one token of the chunk."""
    rows = -(-P // WG)
    per_row = (R + 1) + (N + 1) + N * (R + 1)
    return 1 + rows + 1 + rows * per_row


def split_by_cost(costs, fixed=64):
    """[(i0, i1)] cutting the sequence of per-step loop passes `costs` into runs whose sum (plus
    `fixed`) stays within LOOP_PASS_BUDGET; at least one step per run."""
    out, start, acc = [], 0, fixed
    for i, c in enumerate(costs):
        if acc + c > LOOP_PASS_BUDGET and i > start:
            out.append((start, i))
            start, acc = i, fixed
        acc += c
    if start < len(costs):
        out.append((start, len(costs)))
    return out


def windows(T, per_unit, unit=1, fixed=64):
    """[(t0, tn)] covering tokens [0, T): each window walks whole `unit`s (1 token, or a chunk of
    `unit` tokens) whose loop passes (`per_unit` each, plus `fixed` for the window's set-up and
    final writes) stay within LOOP_PASS_BUDGET. At least one unit per window."""
    units = max(1, (LOOP_PASS_BUDGET - fixed) // max(1, per_unit))
    step = units * unit
    return [(t0, min(step, T - t0)) for t0 in range(0, T, step)]
