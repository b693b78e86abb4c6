// RMSNorm over the last dimension, one 64-thread workgroup per row.
//   r = 1 / sqrt(mean(x^2) + eps);  y = x * r * w   (w = 1 when flags bit0 is clear:
//   Falcon-Mamba's weightless norms on B, C and dt)
// Backward, with g = dy * w:
//   dx_i = r * g_i - x_i * r^3 * sum_j(g_j x_j) / D;   dw_j = sum_rows dy_j * x_j * r

struct Params { rows: u32, dim: u32, eps: f32, flags: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;     // forward: y; backward: dx
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;  // [rows], saved by forward
@group(0) @binding(5) var<storage, read> dy: array<f32>;

fn weight(j: u32) -> f32 {
  if ((p.flags & 1u) != 0u) { return w[j]; }
  return 1.0;
}

//#include "lib/reduce.wgsl"

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
