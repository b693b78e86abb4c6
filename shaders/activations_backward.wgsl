// MLP activations, backward (py_engine/ops/activations.py; forward: activations_forward.wgsl).
// Over M rows of C channels, with g = dy:
//   relu2_backward:  da = g * 2 relu(a)                                  (a = x)
//   swiglu_backward: da = g * b * silu'(a),  db = g * silu(a)            (a = gate, b = up)
//                    silu'(a) = s (1 + a (1 - s)), s = sigmoid(a)  (lib/activations.wgsl)
//
// Layout: every operand is a column window of a row-major matrix, element (r, c) at
// off + r*str + c. da and db are usually the two halves of one fused [M, 2C] gradient buffer:
// WebGPU forbids binding one buffer writable twice in a dispatch, so then (flags bit 0) the
// buffer is bound once, at da, and db's window is written through da as well (db is a dummy).
//
// Dispatch: one thread per element i = r*C + c, 256-thread workgroups, ceil(M*C/256) groups
// folded into y beyond 65535. No reductions, no shared memory.

struct Params {
  M: u32, C: u32, flags: u32, _p0: u32,              // flags: bit0 da and db share da's buffer
  g_off: u32, g_str: u32, a_off: u32, a_str: u32,    // dy view; a view (x or gate)
  b_off: u32, b_str: u32, da_off: u32, da_str: u32,  // b view (up); da view (dx or dgate)
  db_off: u32, db_str: u32, _p1: u32, _p2: u32,      // db view (dup)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;          // [M, C] view
@group(0) @binding(2) var<storage, read> a: array<f32>;           // [M, C] view: x or gate
@group(0) @binding(3) var<storage, read> b: array<f32>;           // [M, C] view: up (swiglu only)
@group(0) @binding(4) var<storage, read_write> da: array<f32>;    // [M, C] view: dx or dgate
@group(0) @binding(5) var<storage, read_write> db: array<f32>;    // [M, C] view: dup (swiglu only)

//#include "lib/activations.wgsl"

fn rc(gid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.M * p.C) { return vec2<u32>(p.M, 0u); }
  return vec2<u32>(i / p.C, i % p.C);
}

@compute @workgroup_size(256)
fn relu2_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = rc(gid, nwg);
  if (e.x >= p.M) { return; }
  let x = a[p.a_off + e.x * p.a_str + e.y];
  da[p.da_off + e.x * p.da_str + e.y] = dy[p.g_off + e.x * p.g_str + e.y] * 2.0 * max(x, 0.0);
}

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = rc(gid, nwg);
  if (e.x >= p.M) { return; }
  let g = dy[p.g_off + e.x * p.g_str + e.y];
  let x = a[p.a_off + e.x * p.a_str + e.y];
  let u = b[p.b_off + e.x * p.b_str + e.y];
  da[p.da_off + e.x * p.da_str + e.y] = g * u * dsilu(x);
  let d = g * silu(x);
  let j = p.db_off + e.x * p.db_str + e.y;
  if ((p.flags & 1u) != 0u) { da[j] = d; } else { db[j] = d; }
}
