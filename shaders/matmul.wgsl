// Strided matrix product, the one kernel behind Linear forward and both backward products.
//
//   C[i, j] (+)= sum_k A[i*sa0 + k*sa1] * B[k*sb0 + j*sb1]  (+ bias[j])      C is [M, N]
//
// Linear y = x @ W^T + b   : A = x [M,K] (K,1),  B = W^T  i.e. W [N,K] read (1,K)
// dX = dY @ W              : A = dY [M,N] (N,1), B = W [N,K] read (K,1)
// dW = dY^T @ X            : A = dY^T (1,N),     B = X [M,K] read (K,1)
// Each thread owns a 4x4 block of C in registers; no shared memory and no barriers, which
// is what both SwiftShader (barriers cost 15-30x there) and large GPUs digest well for now.
// It serves the forward and both backward products alike, so the file carries no direction;
// the bias gradient, the one backward-only piece of Linear, is linear_backward.wgsl.

//#include "lib/matmul_common.wgsl"

@compute @workgroup_size(8, 8)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i0 = gid.y * 4u;
  let j0 = gid.x * 4u;
  if (i0 >= p.M || j0 >= p.N) { return; }
  // Rows/cols past the edge read a clamped (valid) element and are never written.
  let last_i = p.M - 1u;
  let last_j = p.N - 1u;
  let ra = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i)) * p.sa0;
  let cb = vec4<u32>(min(j0, last_j), min(j0 + 1u, last_j), min(j0 + 2u, last_j), min(j0 + 3u, last_j)) * p.sb1;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k++) {
    let ka = k * p.sa1;
    let kb = k * p.sb0;
    let bv = vec4<f32>(b[kb + cb.x], b[kb + cb.y], b[kb + cb.z], b[kb + cb.w]);
    acc0 += a[ra.x + ka] * bv;
    acc1 += a[ra.y + ka] * bv;
    acc2 += a[ra.z + ka] * bv;
    acc3 += a[ra.w + ka] * bv;
  }
  var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var r = 0u; r < 4u; r++) {
    let i = i0 + r;
    if (i >= p.M) { break; }
    for (var s = 0u; s < 4u; s++) {
      let j = j0 + s;
      if (j >= p.N) { break; }
      var v = rows[r][s];
      if ((p.flags & 1u) != 0u) { v += bias[j]; }
      let idx = i * p.N + j;
      if ((p.flags & 2u) != 0u) { v += c[idx]; }
      c[idx] = v;
    }
  }
}
