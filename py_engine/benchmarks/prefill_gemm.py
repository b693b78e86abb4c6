"""The prefill's GEMMs alone, through whichever backend runs the bench: mamba-1.4b's four
products at 1,024 tokens, each with the 16-byte-staged tile (shaders/matmul_tiled_kk.wgsl) and
with the scalar-staged one (shaders/matmul_tiled.wgsl), side by side in one process. Put against the same section run
natively, it says whether a prefill that is slower through Dawn than natively on the same GPU
loses it in the GEMMs (Tint's code for them) or elsewhere (`mambaweb bench --dawn --only
prefill_gemm`, then `--native`)."""
from py_engine.benchmarks.foundation import matmul_gflops

# (M, K, N): x [M, K] @ W^T, W [N, K] -- in_proj, out_proj, x_proj's dt rows + B + C as one
# weight, dt_proj
SHAPES = ((1024, 2048, 8192), (1024, 4096, 2048), (1024, 4096, 160), (1024, 128, 4096))


async def run(device, shapes=SHAPES, min_seconds=0.3):
    out = []
    try:
        for M, K, N in shapes:
            for kk in (True, False):
                device.tiled_kk = kk
                r = await matmul_gflops(device, M, K, N, min_seconds=min_seconds)
                r["kk"] = kk
                r["us_per_matmul"] = 1000 * r.pop("ms_per_matmul")
                r["tflops"] = r.pop("gflops") / 1000
                out.append(r)
    finally:
        device.tiled_kk = None
    return out
