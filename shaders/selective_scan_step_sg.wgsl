enable subgroups;
// Mamba-1's decode step with dt_proj folded in (selective_scan_step.wgsl), its lane reductions'
// steps below the subgroup size as subgroup shuffles -- the same sums bit for bit, fewer
// barriers (py_engine/ops/selective_scan.step_subgroups picks it where the device has
// subgroups). The kernel: lib/selective_scan_step_body.wgsl.
const SUBGROUPS = true;
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return subgroupShuffleXor(v, mask); }
//#include "lib/selective_scan_step_body.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(subgroup_size) sg: u32) {
  scan_step_dtproj(lid3.x, wid, sg);
}
