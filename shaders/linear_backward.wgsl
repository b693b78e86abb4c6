// Linear's bias gradient (the products, forward and backward, are matmul.wgsl):
//   db[j] (+)= sum_i dY[i, j]      dY [M, N] bound as `a`, db [N] as `c`
// One thread per column, rows summed in order (deterministic); grid ceil(N/64).

//#include "lib/matmul_common.wgsl"

@compute @workgroup_size(64)
fn bias_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.N) { return; }
  var s = 0.0;
  for (var i = 0u; i < p.M; i++) { s += a[i * p.N + j]; }
  if ((p.flags & 2u) != 0u) { s += c[j]; }
  c[j] = s;
}
