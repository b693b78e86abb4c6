"""GPU time of the prefill / training GEMMs per shape and kernel (native backend).

  python -m tools.sweep_matmul --shapes 1024x8192x2048,1024x160x4096,1024x4096x128,1024x2048x4096

A shape is MxNxK of y[M,N] = x[M,K] @ W[N,K]^T (mamba-1.4b's in_proj, x_proj, dt_proj and out_proj
at a 1024-token prompt by default). Each product of Linear (forward, dX = dY @ W, dW = dY^T @ X)
runs --reps times per kernel -- the register-only `classic` (shaders/matmul.wgsl, what software
adapters run) and the shared-memory tiled one with 64x64 and 128x128 blocks
(shaders/matmul_tiled.wgsl) -- with timestamp queries around each dispatch
(py_engine/gpu/native_profile.py). Prints JSON lines: mean GPU us per call and TFLOP/s, and which
kernel the engine picks for that shape.
"""
import argparse
import json
import sys

SNIPPET = """
import struct
import py_engine.ops.linear as L
from py_engine.gpu.native_profile import KernelProfiler
from py_engine.gpu.tensor import Tensor
M, N, K = args['M'], args['N'], args['K']
x = Tensor.from_bytes(device, (M, K), struct.pack('<f', 0.01) * (M * K))
w = Tensor.from_bytes(device, (N, K), struct.pack('<f', 0.02) * (N * K))
dy = Tensor.from_bytes(device, (M, N), struct.pack('<f', 0.03) * (M * N))
y, dx, dw = Tensor(device, (M, N)), Tensor(device, (M, K)), Tensor(device, (N, K))
picks = {'classic': (False, 256), 'tiled_64': (True, 10 ** 9), 'tiled_128': (True, 1)}
out = []
for kernel in args['kernels']:
    device.force_tiled_matmul, L.BIG_TILE_MIN_SIDE = picks[kernel]
    for product in ('forward', 'dx', 'dw'):
        prof = KernelProfiler(device)
        device.profiler = prof
        for rep in range(args['reps'] + 2):
            b = device.batch()
            if product == 'forward':
                L.raw_linear(b, x, w, out=y)
            elif product == 'dx':
                L.linear_backward_input(b, dy, w, out=dx)
            else:
                L.linear_backward_weight(b, dy, x, out=dw)
            b.submit()
            if rep == 1:
                await device.finish(); await prof.collect()
        rows = await prof.collect()
        device.profiler = None
        us = sum(r['gpu_us'] for r in rows) / args['reps']
        out.append({'M': M, 'N': N, 'K': K, 'product': product, 'kernel': kernel,
                    'gpu_us': round(us, 1), 'tflop_per_s': round(2 * M * N * K / us / 1e6, 2)})
device.force_tiled_matmul = None
L.BIG_TILE_MIN_SIDE = 65
for t in (x, w, dy, y, dx, dw):
    t.release()
result = out
"""


def main(argv=None):
    from tools.native_engine import NativeEngine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="1024x8192x2048,1024x160x4096,1024x4096x128,1024x2048x4096")
    ap.add_argument("--kernels", default="classic,tiled_64,tiled_128")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    with NativeEngine() as eng:
        print(json.dumps({"adapter": eng.info["adapter"]}), flush=True)
        for shape in args.shapes.split(","):
            M, N, K = (int(v) for v in shape.split("x"))
            for r in eng.run(SNIPPET, M=M, N=N, K=K, kernels=args.kernels.split(","),
                             reps=args.reps):
                print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
