// AdamW on the GPU, with global-norm clipping and a skip for non-finite gradients.
//
//   sumsq_partial     : partial[slot + wg] = sum of g^2 over a chunk of one gradient tensor
//   grad_norm_finalize: norm = sqrt(sum of all partials); writes the step's gate
//                       gate[0] = norm, gate[1] = clip scale min(1, max_norm / (norm + 1e-6)),
//                       gate[2] = 1 if norm and the step's losses are finite else 0 (then
//                       no parameter or moment changes); p.slot = how many loss values
//                       `grad` (bound to the losses here) holds
//   adamw_step        : per element, as torch.optim.AdamW (decoupled weight decay):
//       g = grad * scale;  p -= lr * wd * p
//       m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//       p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_i = 1 - b_i^t
// Per-step values (lr, bias corrections) live in the `hyper` storage buffer, written each
// step, so the uniform cache sees the same bytes every step and nothing is allocated.

struct Params { n: u32, slot: u32, weight_decay: f32, max_norm: f32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
@group(0) @binding(7) var<storage, read> hyper: array<f32>;   // lr, b1, b2, eps, bc1, bc2

//#include "lib/reduce.wgsl"

@compute @workgroup_size(256)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let chunk = (p.n + nwg.x - 1u) / nwg.x;
  let start = wid.x * chunk;
  let end = min(start + chunk, p.n);
  var s = 0.0;
  for (var i = start + lid; i < end; i += 256u) { let g = grad[i]; s += g * g; }
  let total = workgroup_sum256(lid, s);
  if (lid == 0u) { partial[p.slot + wid.x] = total; }
}

fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }

// p.n = number of partial slots in use; p.slot = number of loss values in `grad`.
@compute @workgroup_size(256)
fn grad_norm_finalize(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i += 256u) { s += partial[i]; }
  let total = workgroup_sum256(lid, s);
  if (lid == 0u) {
    let norm = sqrt(total);
    gate[0] = norm;
    var scale = 1.0;
    if (p.max_norm > 0.0 && norm > p.max_norm) { scale = p.max_norm / (norm + 1e-6); }
    gate[1] = scale;
    // a non-finite loss with finite gradients (e.g. +inf cross-entropy) skips the step too
    var ok = finite(total);
    for (var i = 0u; i < p.slot; i++) { ok = ok && finite(grad[i]); }
    gate[2] = select(0.0, 1.0, ok);
  }
}

@compute @workgroup_size(256)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n || gate[2] == 0.0) { return; }
  let lr = hyper[0];
  let b1 = hyper[1];
  let b2 = hyper[2];
  let eps = hyper[3];
  let g = grad[i] * gate[1];
  var w = param[i];
  w -= lr * p.weight_decay * w;
  let mi = b1 * m[i] + (1.0 - b1) * g;
  let vi = b2 * v[i] + (1.0 - b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  w -= (lr / hyper[4]) * mi / (sqrt(vi) / sqrt(hyper[5]) + eps);
  param[i] = w;
}
