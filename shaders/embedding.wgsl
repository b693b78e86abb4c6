// Embedding gather and its backward.
//   forward:  out[t, :] = W[ids[t], :]                         out [T, D], W [V, D]
//   backward: dW[v, :] += sum over t with ids[t] == v of dy[t, :]
// WGSL has no float atomics, so the backward gives each thread one column d and walks the
// tokens in order: no two threads touch the same element, and the sum order is fixed
// (deterministic run to run).

struct Params { tokens: u32, dim: u32, vocab: u32, flags: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;          // forward: W; backward: dy
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;    // forward: out; backward: dW

@compute @workgroup_size(64)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  let t = gid.y;
  if (d >= p.dim || t >= p.tokens) { return; }
  let id = ids[t];
  var v = 0.0;
  if (id < p.vocab) { v = src[id * p.dim + d]; }
  dst[t * p.dim + d] = v;
}

@compute @workgroup_size(64)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  if (d >= p.dim) { return; }
  for (var t = 0u; t < p.tokens; t++) {
    let id = ids[t];
    if (id < p.vocab) { dst[id * p.dim + d] += src[t * p.dim + d]; }
  }
}
