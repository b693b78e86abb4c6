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

// The same with workgroups past WARM_FROM (x; last sequence's row of the grid only) warming the
// L2 with a later mat-vec's weights meanwhile (lib/l2_warm.wgsl; Mamba-1's out_proj).
//#include "lib/l2_warm.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj_warm(@builtin(local_invocation_id) lid3: vec3<u32>,
                                   @builtin(workgroup_id) wid: vec3<u32>,
                                   @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(subgroup_size) sg: u32) {
  if (wid.x < WARM_FROM) { scan_step_dtproj(lid3.x, wid, sg); return; }   // uniform per workgroup
  if (wid.y + 1u != nwg.y) { return; }
  let acc = warm_l2((wid.x - WARM_FROM) * 128u + lid3.x, (nwg.x - WARM_FROM) * 128u);
  if (warm_kept(p.flags, acc)) { y[0] = bitcast<f32>(acc); }
}
