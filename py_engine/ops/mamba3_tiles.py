"""Mamba-3's chunks-side-by-side forward with register-tiled delta and out kernels
(shaders/mamba3_chunk_tiles.wgsl; ops/mamba3._forward_parallel runs them where `tiles_on`):
whether they run, the chunk length they run at and their blocks of dims.

The thread-per-(state row, class of dims) kernels of mamba3_chunked.wgsl hold a chunk's tokens
in register arrays and every k, q and M tile in workgroup memory as f32s, which keeps mamba3-187m
(d_state 128) at 8-token chunks within WebGPU's default 16 KiB; 16-token chunks measured slower
there (15,047 against 22,110 tok/s prefill of 1,024 tokens, H200 through Dawn, the twenty-fifth
session). The tiled kernels stage their operands as vec4s in blocks of dims sized from the
device, as Mamba-2's ssd_chunked.wgsl does (measured 2.6x Mamba-2's prefill), so the chunks may
be longer and the chunk states the carry walks fewer. Timed on an H100 through Dawn (the
thirty-first session, mamba3-187m f16, against the thread-per-row kernels at 8-token chunks):
1,024-token prefill 21,315 against 18,978 tok/s streamed (25,653 against 20,809 recorded),
256 tokens 5,878 against 4,301; one forward of 1,024 tokens alone natively 1,131 against
1,647 us (tools/ablate_mamba3). On by rule on real GPUs."""
from py_engine.gpu.settings import pick
from py_engine.ops.step_kernels import hardware
from py_engine.ops._common import workgroup_storage

TILE_WG = 256              # the kernels' workgroup size (CWG)
TILE_CHUNKS = (2, 4, 8, 16, 32)
TILE_RULE_L = 32           # the longest chunk the rule takes (Mamba-2's measured best)
MAX_LR = 32                # (token, rank) rows a chunk: M tiles of one workgroup


def tiles_on(dev):
    """Whether path "parallel" runs the tiled kernels: `device.mamba3_tiles` (tests), else
    MAMBAWEB_MAMBA3_TILES = 1 | 0 (bench variants), else on a real GPU (not a CPU adapter:
    SwiftShader, lavapipe, where the tests force them)."""
    return hardware(dev, "mamba3_tiles", "MAMBAWEB_MAMBA3_TILES")


def _v(n):
    return -(-n // 4)


def sh_floats(L, N, S, R):
    """sh's f32s: phi [L, S] | the previous token's phi [S] | 7 scalar rows [L] | k_prev [R, N]."""
    return L * S + S + 7 * L + R * N


def blocks(dev, L, P, N, S, R):
    """(NBS, NBO, WS, delta's WS4, out's WS4) at chunk length L on this device: the most of K's
    vec4s of dims (delta) and of dims (out: Q^T, K^T and a^T) a block that fit the workgroup
    memory beside sh and the fixed tiles (the shader's header has the layout);
    `device.mamba3_block` (tests) caps both. NBS or NBO 0: it does not fit."""
    PV, NV, LR = _v(P), _v(N), L * R
    LRV = _v(LR)
    ws = sh_floats(L, N, S, R)
    avail = (workgroup_storage(dev) - 4 * ws) // 16
    cap = getattr(dev, "mamba3_block", None) or 1 << 30
    rows = R + LR
    nbs = max(0, min(NV, cap, (avail - rows * PV) // rows))
    nbo = max(0, min(N, cap, (avail - LR * PV - LR * LRV) // (2 * LRV + PV)))
    return nbs, nbo, ws, rows * PV + rows * nbs, LR * PV + LR * LRV + nbo * (2 * LRV + PV)


def fits(dev, L, P, N, S, R):
    """A block of one dim fits, a chunk holds at most MAX_LR rows and each of the out kernel's
    threads owns at most one M and one y tile."""
    nbs, nbo, _, _, _ = blocks(dev, L, P, N, S, R)
    LRV = _v(L * R)
    return L * R <= MAX_LR and nbs > 0 and nbo > 0 and LRV * max(_v(P), LRV) <= TILE_WG


def chunk_len(dev, P, N, S, R=1):
    """The tiled kernels' chunk length: the longest of TILE_CHUNKS up to TILE_RULE_L (or what
    `device.mamba3_chunk` / MAMBAWEB_MAMBA3_CHUNK sets) that fits (`fits`); 0 where none does
    (the thread-per-row kernels run). mamba3-187m's heads (P 64, N 128, 32 angles): L 16 in
    WebGPU's default 16 KiB, 32 in an H200's 48 KiB."""
    cap = pick(dev, "mamba3_chunk", "MAMBAWEB_MAMBA3_CHUNK", TILE_CHUNKS, lambda: TILE_RULE_L)
    for L in sorted(TILE_CHUNKS, reverse=True):
        if L <= cap and fits(dev, L, P, N, S, R):
            return L
    return 0
