// Softmax cross-entropy, backward (the loss is cross_entropy_forward.wgsl):
//   dx[t, v] (+)= scale * (softmax(x_t)_v - [v == y_t]) / n_valid     (0 on ignored rows)
// softmax is exp(x - lse) with the lse the forward saved; one thread per (v, t),
// grid (ceil(V/64), T).

//#include "lib/cross_entropy_common.wgsl"

@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // dx [T, V]
@group(0) @binding(5) var<storage, read> reduced: array<f32>;      // [2] from reduce: mean, n_valid

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
