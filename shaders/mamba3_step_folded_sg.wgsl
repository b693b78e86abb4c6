enable subgroups;
// Mamba-3's folded SISO step over the rows' grid (mamba3_step_rows_last: shaders/
// mamba3_step_folded.wgsl has the forms and their bindings) with each row's lane sum as subgroup
// shuffles -- the same sums bit for bit, the tree's six barriers gone where a row's 32 lanes are
// one subgroup (py_engine/ops/mamba3.step_subgroups: off by rule, within the runs' spread of the
// tree on an H100). It assumes a workgroup's subgroups are runs of consecutive local invocation
// indices (subgroup_invocation_id = lid mod sg, so the shuffle with lid ^ s reaches the lane s
// away in the same row): WGSL does not promise it, every adapter we ran (NVIDIA, lavapipe) does
// it, selective_scan_step_sg.wgsl assumes it too, and the same-bits test
// (tests/unit/test_mamba3_step_lanes_native.py) fails where it does not hold.
const SUBGROUPS = true;
fn shuffle_xor(v: f32, mask: u32) -> f32 { return subgroupShuffleXor(v, mask); }
//#include "lib/mamba3_step_folded_body.wgsl"

@compute @workgroup_size(256)
fn mamba3_step_rows_last(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32,
                         @builtin(subgroup_size) sg: u32) {
  rows_last_step(wid, lid, sg);
}
