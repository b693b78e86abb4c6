// One C and its bias for a tiled GEMM kernel (shaders/matmul_tiled.wgsl,
// shaders/matmul_tiled_kk.wgsl): the store's put.

@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [N]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // C [M, N]; split: [S, M, N]

// C[i, j] = x (+ bias[j], + the old C[i, j]).
fn put(i: u32, j: u32, x: f32) {
  let idx = i * p.N + j;
  var v = x;
  if ((p.flags & 1u) != 0u) { v += bias[j]; }
  if ((p.flags & 2u) != 0u) { v += c[idx]; }
  c[idx] = v;
}
