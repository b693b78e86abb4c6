// Embedding backward (the gather is embedding_forward.wgsl):
//   dW[v, :] += sum over t with ids[t] == v of dy[t, :]
// (a row block of a split table, lib/embedding_common.wgsl: rows row0.. of dW, ids outside skipped)
// WGSL has no float atomics, so the backward gives each thread one column d and walks the
// tokens in order: no two threads touch the same element, and the sum order is fixed
// (deterministic run to run). Grid ceil(D/64).

//#include "lib/embedding_common.wgsl"

@group(0) @binding(2) var<storage, read> src: array<f32>;          // dy [T, D]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;    // dW [V, D], accumulated into

@compute @workgroup_size(64)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  if (d >= p.dim) { return; }
  for (var t = 0u; t < p.tokens; t++) {
    let r = ids[t] - p.row0;
    if (r < p.vocab) { dst[r * p.dim + d] += src[t * p.dim + d]; }
  }
}
