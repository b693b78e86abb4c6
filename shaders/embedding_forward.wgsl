// Embedding gather: out[t, :] = W[ids[t], :]          out [T, D], W [V, D]
// One thread per (column d, token t), grid (ceil(D/64), T). The backward is embedding_backward.wgsl.

//#include "lib/embedding_common.wgsl"

@group(0) @binding(2) var<storage, read> src: array<f32>;          // W [V, D]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;    // out [T, D]

@compute @workgroup_size(64)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  let t = gid.y;
  if (d >= p.dim || t >= p.tokens) { return; }
  let r = ids[t] - p.row0;
  var v = 0.0;
  if (r < p.vocab) {
    v = src[r * p.dim + d];
  } else if ((p.flags & 1u) != 0u) {
    return;
  }
  dst[t * p.dim + d] = v;
}
