enable subgroups;
// selective_scan_step_xacc.wgsl with the lane reductions' steps below the subgroup size as
// subgroup shuffles (as selective_scan_step_sg.wgsl is to selective_scan_step.wgsl).
const SUBGROUPS = true;
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return subgroupShuffleXor(v, mask); }
//#include "lib/scan_step_xproj_sums.wgsl"
//#include "lib/selective_scan_step_body.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(subgroup_size) sg: u32) {
  scan_step_dtproj(lid3.x, wid, sg);
  xsum_release(lid3.x, nwg);
}
