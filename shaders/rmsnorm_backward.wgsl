// RMSNorm over the last dimension, backward (the forward is rmsnorm_forward.wgsl:
// r = 1 / sqrt(mean(x^2) + eps), y = x * r * w). With g = dy * w:
//   dx_i = r * g_i - x_i * r^3 * sum_j(g_j x_j) / D;   dw_j = sum_rows dy_j * x_j * r
//   rmsnorm_backward         one 64-thread workgroup per row: dx (+)=
//   rmsnorm_backward_weight  one thread per column: dw (+)=, rows summed in order

//#include "lib/rmsnorm_common.wgsl"

@group(0) @binding(3) var<storage, read_write> y: array<f32>;     // dx [rows, dim], or dw [dim]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;  // [rows] from the forward
@group(0) @binding(5) var<storage, read> dy: array<f32>;          // [rows, dim]

@compute @workgroup_size(64)
fn rmsnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  let r = rstd[row];
  var dot = 0.0;
  for (var j = lid; j < p.dim; j += 64u) { dot += dy[base + j] * weight(j) * x[base + j]; }
  let total = workgroup_sum64(lid, dot);
  let c = r * r * r * total / f32(p.dim);
  for (var j = lid; j < p.dim; j += 64u) {
    let v = r * dy[base + j] * weight(j) - x[base + j] * c;
    if ((p.flags & 2u) != 0u) { y[base + j] += v; } else { y[base + j] = v; }
  }
}

// dw_j (+)= sum over rows of dy_j * x_j * r_row; one thread per column. Output in `y`.
@compute @workgroup_size(64)
fn rmsnorm_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.dim) { return; }
  var s = 0.0;
  for (var row = 0u; row < p.rows; row++) { s += dy[row * p.dim + j] * x[row * p.dim + j] * rstd[row]; }
  if ((p.flags & 2u) != 0u) { y[j] += s; } else { y[j] = s; }
}
