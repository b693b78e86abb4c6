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
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [N]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // C [M, N]; split: [S, M, N]

fn load_b(c: vec2<u32>, l: u32, j0: u32, k0: u32, kend: u32) -> f32 {
  let j = j0 + c.x + l;
  let k = k0 + c.y;
  if (j < p.N && k < kend) { return b[k * p.sb0 + j * p.sb1]; }
  return 0.0;
}

// C[i, j .. j+3] (+ bias, + old C) for the columns inside N; nothing for a row past M.
// Split-K: the raw partial of slice z instead, at c[z, i, j].
fn store4(z: u32, i: u32, j: u32, v: vec4<f32>) {
  if (i >= p.M) { return; }
  for (var s = 0u; s < 4u; s++) {
    let jj = j + s;
    if (jj >= p.N) { return; }
    var x = v[s];
    let idx = i * p.N + jj;
    if ((p.flags & SPLIT) != 0u) { c[z * p.M * p.N + idx] = x; continue; }
    if ((p.flags & 1u) != 0u) { x += bias[jj]; }
    if ((p.flags & 2u) != 0u) { x += c[idx]; }
    c[idx] = x;
  }
}

// C[i, j] (+)= sum over the S slices' partials (+ bias): one thread per element of C.
// a: the partials [S, M, N]; S = p.K here (the slice count), b unused.
@compute @workgroup_size(256)
fn matmul_split_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 256u;
  let mn = p.M * p.N;
  if (idx >= mn) { return; }
  _ = b[0];                          // keeps the binding layout the tiled entries have
  var x = partials_sum(idx, mn);
  if ((p.flags & 1u) != 0u) { x += bias[idx % p.N]; }
  if ((p.flags & 2u) != 0u) { x += c[idx]; }
  c[idx] = x;
}
