// Softmax cross-entropy over rows of logits [T, V] with integer targets [T].
// A negative target (e.g. -100) is ignored. loss = sum_valid(lse_t - x[t, y_t]) / n_valid.
//   cross_entropy_forward : per row -> row_loss[t], lse[t], valid[t]     (64 threads/row)
//   cross_entropy_reduce  : one workgroup -> out[0] = mean loss, out[1] = n_valid
// The gradient is cross_entropy_backward.wgsl (it reads stats, and out as `reduced`).

//#include "lib/cross_entropy_common.wgsl"

@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // [2]: mean loss, n_valid

var<workgroup> part: array<f32, 256>;

fn tree(lid: u32, n: u32, is_max: bool) {
  for (var s = n / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      if (is_max) { part[lid] = max(part[lid], part[lid + s]); } else { part[lid] += part[lid + s]; }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(64)
fn cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.vocab;
  var m = -3.4e38;
  for (var v = lid; v < p.vocab; v += 64u) { m = max(m, logits[base + v]); }
  part[lid] = m;
  workgroupBarrier();
  tree(lid, 64u, true);
  m = part[0];
  workgroupBarrier();
  var s = 0.0;
  for (var v = lid; v < p.vocab; v += 64u) { s += exp(logits[base + v] - m); }
  part[lid] = s;
  workgroupBarrier();
  tree(lid, 64u, false);
  if (lid == 0u) {
    let lse = m + log(part[0]);
    let y = targets[row];
    var loss = 0.0;
    var valid = 0.0;
    if (y >= 0 && u32(y) < p.vocab) { loss = lse - logits[base + u32(y)]; valid = 1.0; }
    stats[row] = loss;
    stats[p.rows + row] = lse;
    stats[2u * p.rows + row] = valid;
  }
}

@compute @workgroup_size(256)
fn cross_entropy_reduce(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var t = lid; t < p.rows; t += 256u) { s += stats[t]; }
  part[lid] = s;
  workgroupBarrier();
  tree(lid, 256u, false);
  let total = part[0];
  workgroupBarrier();
  var c = 0.0;
  for (var t = lid; t < p.rows; t += 256u) { c += stats[2u * p.rows + t]; }
  part[lid] = c;
  workgroupBarrier();
  tree(lid, 256u, false);
  if (lid == 0u) {
    let n = part[0];
    out[0] = select(0.0, total / n, n > 0.0);
    out[1] = n;
  }
}
