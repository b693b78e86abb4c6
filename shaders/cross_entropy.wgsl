// Softmax cross-entropy over rows of logits [T, V] with integer targets [T].
// A negative target (e.g. -100) is ignored. loss = sum_valid(lse_t - x[t, y_t]) / n_valid.
//   cross_entropy_forward : per row -> row_loss[t], lse[t], valid[t]     (64 threads/row)
//   cross_entropy_reduce  : one workgroup -> out[0] = mean loss, out[1] = n_valid
//   cross_entropy_backward: dx[t, v] = scale * (softmax(x_t)_v - [v == y_t]) / n_valid

struct Params { rows: u32, vocab: u32, flags: u32, scale: f32 };   // scale: upstream dL/dloss

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;  // [3*rows]: loss, lse, valid
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // reduce: [2]; backward: dx
@group(0) @binding(5) var<storage, read> reduced: array<f32>;      // [2] from reduce: mean, n_valid

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

// out = dx [T, V]; n_valid comes from the reduce pass's output.
@compute @workgroup_size(64)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let v = gid.x;
  let row = gid.y;
  if (v >= p.vocab || row >= p.rows) { return; }
  let idx = row * p.vocab + v;
  let n = reduced[1];
  var g = 0.0;
  if (stats[2u * p.rows + row] > 0.0 && n > 0.0) {
    let sm = exp(logits[idx] - stats[p.rows + row]);
    g = sm;
    if (i32(v) == targets[row]) { g -= 1.0; }
    g *= p.scale / n;
  }
  if ((p.flags & 2u) != 0u) { out[idx] += g; } else { out[idx] = g; }
}
