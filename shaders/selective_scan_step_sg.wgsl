enable subgroups;
// Mamba-1's decode step with dt_proj folded in (selective_scan_step.wgsl), its lane reductions'
// steps below the subgroup size as subgroup shuffles -- the same sums bit for bit, fewer
// barriers (py_engine/ops/selective_scan.step_subgroups picks it where the device has
// subgroups). The kernel: lib/selective_scan_step_body.wgsl.
const SUBGROUPS = true;
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return subgroupShuffleXor(v, mask); }
const CPW = 8u;   // channels per 128-thread workgroup
// the step's x_proj outputs: storage views (dt_low: x_proj's dt columns; B, C)
fn dl_at(b: u32, k: u32) -> f32 { return delta[p.dl_off + b * p.dl_str + k]; }
fn b_at(b: u32, n: u32) -> f32 { return Bm[p.b_off + b * p.b_str + n]; }
fn c_at(b: u32, n: u32) -> f32 { return Cm[p.c_off + b * p.c_str + n]; }
//#include "lib/selective_scan_step_body.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(subgroup_size) sg: u32) {
  scan_step_dtproj(lid3.x, wid, sg);
}
