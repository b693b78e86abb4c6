// Elementwise derivatives over n f32 values (layout and Params: lib/elementwise_common.wgsl;
// the ops themselves are elementwise_forward.wgsl). a = x, b = dy, out (+)= dy * f'(x):
//   silu:     d/dx = s * (1 + x * (1 - s)),  s = sigmoid(x)
//   softplus: d/dx = sigmoid(x) (exactly 1 above the threshold 20, as PyTorch's backward)

//#include "lib/elementwise_common.wgsl"

// a = x, b = dy
@compute @workgroup_size(256)
fn silu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let x = a[i];
  let s = sigmoid(x);
  store(i, b[i] * s * (1.0 + x * (1.0 - s)));
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
