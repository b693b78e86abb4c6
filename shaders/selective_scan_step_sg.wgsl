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

// The step with a second grid row of workgroups (z = 1) warming L2 with a later dispatch's
// weights while the scan runs (lib/l2_warm.wgsl): the next layer's in_proj, by
// py_engine/ops/l2_warm.py's plan.
//#include "lib/l2_warm.wgsl"
@compute @workgroup_size(128)
fn selective_scan_step_dtproj_warm(@builtin(local_invocation_id) lid3: vec3<u32>,
                                   @builtin(workgroup_id) wid: vec3<u32>,
                                   @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(subgroup_size) sg: u32) {
  if (wid.z == 1u) {                    // uniform per workgroup
    let v = warm_l2(wid.x + wid.y * nwg.x, nwg.x * nwg.y, lid3.x, 128u);
    if ((p.flags & WARM_SINK) != 0u) { y[lid3.x] = v; }
    return;
  }
  scan_step_dtproj(lid3.x, wid, sg);
}
