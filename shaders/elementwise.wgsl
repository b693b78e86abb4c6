// Elementwise ops over n f32 values. The grid may be folded into y when n > 65535*256.
//   add:      out = a + b            mul:      out = a * b
//   silu:     out = x * sigmoid(x)   d/dx = s * (1 + x * (1 - s)),  s = sigmoid(x)
//   softplus: out = x > 20 ? x : log1p(exp(x))   (PyTorch's threshold-20 form)
//             d/dx = sigmoid(x) (exactly 1 above the threshold, as PyTorch's backward)

struct Params { n: u32, flags: u32, _p0: u32, _p1: u32 };   // flags: bit1 accumulate

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 256u; }

//#include "lib/activations.wgsl"

fn store(i: u32, v: f32) {
  if ((p.flags & 2u) != 0u) { out[i] += v; } else { out[i] = v; }
}

@compute @workgroup_size(256)
fn add_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  store(i, a[i] + b[i]);
}

@compute @workgroup_size(256)
fn mul_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  store(i, a[i] * b[i]);
}

@compute @workgroup_size(256)
fn silu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = a[i];
  store(i, x * sigmoid(x));
}

// a = x, b = dy
@compute @workgroup_size(256)
fn silu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = a[i];
  let s = sigmoid(x);
  store(i, b[i] * s * (1.0 + x * (1.0 - s)));
}

@compute @workgroup_size(256)
fn softplus_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  store(i, softplus(a[i]));
}

// a = x, b = dy
@compute @workgroup_size(256)
fn softplus_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = a[i];
  var g = 1.0;
  if (x <= 20.0) { g = sigmoid(x); }
  store(i, b[i] * g);
}

// out = the f32 whose bits are p._p0 (zeroing gradient buffers, filling constants).
@compute @workgroup_size(256)
fn fill_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = bitcast<f32>(p._p0);
}

// out += a (gradient accumulation; out and a are different buffers)
@compute @workgroup_size(256)
fn accumulate_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] += a[i];
}
