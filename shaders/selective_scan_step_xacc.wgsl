// Mamba-1's decode step with dt_proj folded in (selective_scan_step.wgsl) and x_proj's
// outputs read as the sums the in_proj + conv dispatch added through integer atomics
// (lib/scan_step_xproj_sums.wgsl; py_engine/ops/linear.in_proj_conv_xproj_step), which it
// zeroes again for the next token. The kernel: lib/selective_scan_step_body.wgsl.
const SUBGROUPS = false;
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return v; }   // unused: SUBGROUPS off
//#include "lib/scan_step_xproj_sums.wgsl"
//#include "lib/selective_scan_step_body.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
  scan_step_dtproj(lid3.x, wid, 0u);
  xsum_release(lid3.x, nwg);
}
