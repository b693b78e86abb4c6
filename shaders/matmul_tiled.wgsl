// Shared-memory tiled matrix product for real GPUs (prefill and training GEMMs); same contract
// and Params as matmul.wgsl:
//
//   C[i, j] (+)= sum_k A[i*sa0 + k*sa1] * B[k*sb0 + j*sb1]  (+ bias[j])      C is [M, N]
//
// A workgroup of 16x16 threads computes a BM x BM block of C: matmul_tiled_128 (BM 128, each
// thread 8x8 of C) for big products, matmul_tiled_64 (BM 64, 4x4 each) for products that big
// tiles would leave the GPU short of workgroups. K is walked in steps of BK (8 and 16: BM * BK =
// 1024 either way): the 256 threads stage a BM x BK slice of A and a BK x BM slice of B in
// workgroup memory (one vec4 cell of each operand per thread, loaded a slice ahead), then each
// thread does BK rank-1 updates of its block. Global reads follow whichever index of each
// operand is contiguous (k for x @ W^T, i or j for the backward products), chosen per dispatch
// from the strides. Zero-filled past M, N and K; nothing written past M or N.
// The accumulators are named vec4 variables, not an array: an array indexed in a loop that the
// driver does not unroll lives in slow local memory (an array version of this kernel measured
// 3x slower than the register-only matmul.wgsl on an H200).
// Why not on software adapters: SwiftShader runs barriers 15-30x slower than the register-only
// kernel (matmul.wgsl), and lavapipe caps loop passes; py_engine/ops/linear.py picks.

//#include "lib/matmul_tiled_body.wgsl"

@group(0) @binding(2) var<storage, read> b: array<f32>;          // B, strides (sb0, sb1)
//#include "lib/matmul_tiled_put.wgsl"

fn load_b(c: vec2<u32>, l: u32, j0: u32, k0: u32, kend: u32) -> f32 {
  let j = j0 + c.x + l;
  let k = k0 + c.y;
  if (j < p.N && k < kend) { return b[k * p.sb0 + j * p.sb1]; }
  return 0.0;
}
