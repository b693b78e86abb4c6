// MLP activations, forward (py_engine/ops/activations.py). Over M rows of C channels:
//   relu2_forward:  out = relu(a)^2              (NemotronH's non-gated MLP, mlp_hidden_act "relu2")
//   swiglu_forward: out = silu(a) * b            (a = gate, b = up)
// The backward entries are activations_backward.wgsl.
//
// Layout: a, b and out are column windows of row-major matrices ("views", as in conv1d.wgsl):
// element (r, c) sits at off + r*str + c, so gate and up are read straight out of one fused
// [M, 2C] up-projection output and out may be a window of a wider buffer.
//
// Dispatch: one thread per element i = r*C + c, 256-thread workgroups, ceil(M*C/256) groups
// folded into y beyond 65535. No reductions, no shared memory.

struct Params {
  M: u32, C: u32, flags: u32, _p0: u32,
  a_off: u32, a_str: u32, b_off: u32, b_str: u32,   // a view (x or gate); b view (up)
  o_off: u32, o_str: u32, _p1: u32, _p2: u32,       // out view
  _p3: u32, _p4: u32, _p5: u32, _p6: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;           // [M, C] view: x (relu2) or gate
@group(0) @binding(2) var<storage, read> b: array<f32>;           // [M, C] view: up (swiglu only)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [M, C] view

//#include "lib/activations.wgsl"

// (row, channel) of this thread, or row == M when the thread is past the end
fn rc(gid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.M * p.C) { return vec2<u32>(p.M, 0u); }
  return vec2<u32>(i / p.C, i % p.C);
}

@compute @workgroup_size(256)
fn relu2_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = rc(gid, nwg);
  if (e.x >= p.M) { return; }
  let r = max(a[p.a_off + e.x * p.a_str + e.y], 0.0);
  out[p.o_off + e.x * p.o_str + e.y] = r * r;
}

@compute @workgroup_size(256)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = rc(gid, nwg);
  if (e.x >= p.M) { return; }
  let g = a[p.a_off + e.x * p.a_str + e.y];
  out[p.o_off + e.x * p.o_str + e.y] = silu(g) * b[p.b_off + e.x * p.b_str + e.y];
}
