// Elementwise ops over n f32 values (layout and Params: lib/elementwise_common.wgsl).
//   add:      out = a + b            mul:      out = a * b
//   silu:     out = x * sigmoid(x)
//   softplus: out = x > 20 ? x : log1p(exp(x))   (PyTorch's threshold-20 form)
//   fill:     out = a constant       accumulate: out += a
// The derivatives of silu and softplus are elementwise_backward.wgsl.

//#include "lib/elementwise_common.wgsl"

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

@compute @workgroup_size(256)
fn softplus_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  store(i, softplus(a[i]));
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

// out (+)= s * a, s = bitcast<f32>(_p0) (LoRA's alpha/r on its low-rank branch)
@compute @workgroup_size(256)
fn scale_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  store(i, bitcast<f32>(p._p0) * a[i]);
}
