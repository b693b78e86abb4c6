// RMSNorm over the last dimension, one 64-thread workgroup per row (grid folded into y).
//   r = 1 / sqrt(mean(x^2) + eps);  y = x * r * w   (w = 1 when flags bit0 is clear:
//   Falcon-Mamba's weightless norms on B, C and dt)
// r is saved per row for the backward (rmsnorm_backward.wgsl).

//#include "lib/rmsnorm_common.wgsl"

@group(0) @binding(3) var<storage, read_write> y: array<f32>;     // [rows, dim]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;  // [rows], saved for the backward

@compute @workgroup_size(64)
fn rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var ss = 0.0;
  for (var j = lid; j < p.dim; j += 64u) { let v = x[base + j]; ss += v * v; }
  let total = workgroup_sum64(lid, ss);
  let r = inverseSqrt(total / f32(p.dim) + p.eps);
  for (var j = lid; j < p.dim; j += 64u) { y[base + j] = x[base + j] * r * weight(j); }
  if (lid == 0u) { rstd[row] = r; }
}
