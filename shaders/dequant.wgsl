// Narrow weights back to f32 rows (formats: lib/weight_formats.wgsl), for the paths that read
// weights as f32 matrices: prefill/training GEMMs on a temporary copy, and the embedding
// gather (flags bit0: output row t is W[ids[t]], else W[row0 + t]).
//   out[t, k] = W[src(t), k]      t < T, k < K
// A gather from one row block of a split table (py_engine/gpu/row_chunks.py; flags bit1): W
// holds rows [row0, row0 + N) of the whole table, an id outside them writes zeros (bit2) or
// leaves its output row to the block that holds it.
//#include "lib/weight_formats.wgsl"

struct Params { T: u32, K: u32, N: u32, flags: u32, row0: u32, _a: u32, _b: u32, _c: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;             // the packed weight [N, K]
@group(0) @binding(2) var<storage, read> ids: array<u32>;           // [T] (bit0 of flags)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [T, K]

const SKIP: u32 = 0xffffffffu;

fn src_row(t: u32) -> u32 {
  if ((p.flags & 2u) != 0u) {
    let r = ids[t] - p.row0;        // u32: an id below row0 wraps past N
    return select(SKIP, r, r < p.N);
  }
  if ((p.flags & 1u) != 0u) { return min(ids[t], p.N - 1u); }
  return p.row0 + t;
}

// true when this block does not hold row t's id: zeros written (bit2) or nothing
fn skipped(r: u32, t: u32, k: u32) -> bool {
  if (r != SKIP) { return false; }
  if ((p.flags & 4u) != 0u) { out[t * p.K + k] = 0.0; }
  return true;
}

// one thread per output value; workgroups (x, y) = (k / 256, t)
@compute @workgroup_size(256)
fn dequant_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x;
  let t = gid.y;
  if (k >= p.K || t >= p.T) { return; }
  let r = src_row(t);
  if (skipped(r, t, k)) { return; }
  let i = r * p.K + k;
  out[t * p.K + k] = half_of(w[i / 2u], (i & 1u) == 1u);
}

@compute @workgroup_size(256)
fn dequant_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x;
  let t = gid.y;
  if (k >= p.K || t >= p.T) { return; }
  let r = src_row(t);
  if (skipped(r, t, k)) { return; }
  let i = r * p.K + k;
  let v = bf16_pair(w[i / 2u]);
  out[t * p.K + k] = select(v.x, v.y, (i & 1u) == 1u);
}

@compute @workgroup_size(256)
fn dequant_q8(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x;
  let t = gid.y;
  if (k >= p.K || t >= p.T) { return; }
  let r = src_row(t);
  if (skipped(r, t, k)) { return; }
  let i = r * p.K + k;
  let scale = bitcast<f32>(w[p.N * p.K / 4u + r]);
  out[t * p.K + k] = q8_byte(w[i / 4u], i & 3u) * scale;
}

@compute @workgroup_size(256)
fn dequant_q4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x;
  let t = gid.y;
  if (k >= p.K || t >= p.T) { return; }
  let r = src_row(t);
  if (skipped(r, t, k)) { return; }
  let i = r * p.K + k;
  let group = i / 32u;
  let d = half_of(w[p.N * p.K / 8u + group / 2u], (group & 1u) == 1u);
  out[t * p.K + k] = q4_nibble(w[i / 8u], i & 7u) * d;
}
