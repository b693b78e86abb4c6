// Mamba-3's SISO lanes step (lib/mamba3_step_common.wgsl) with mamba3_prep folded in: each
// workgroup computes its own head's DT, alpha, beta, gamma and the S thetas from in_proj's raw
// columns (lib/mamba3_prep.wgsl's prep_value, the same expressions mamba3_prep stores) and reads
// the biases and D from the parameters themselves -- one dispatch fewer per decoded layer.
// Storage bindings: the raw scalars, 4 parameters, x/Bn/Cn/y, 4 states, 2 norm weights = 15
// (mamba3_step_rows_last: 16 with `arrived`), so the host uses it only where the device binds
// that many (py_engine/ops/mamba3.step_folds_prep, step_last; H100s and H200s give 16 through
// Dawn, SwiftShader 10). The four raw inputs come in ONE binding: the
// mixer has in_proj write dd_dt, dd_A, trap and angles into one buffer (their views' offsets and
// strides in p.dt_off ..  p.an_str).
//
// Three forms (py_engine/ops/mamba3.step_splits and step_last pick):
//   mamba3_step_lanes_folded   one dispatch, one 256-thread workgroup a head (grid H, Bsz): the
//                              head's P rows x N states in one workgroup -- 24 workgroups at
//                              mamba3-187m, 48% of its decode's GPU time on an H100
//   mamba3_step_head + mamba3_step_rows   two dispatches: the head's prologue once (grid H, Bsz;
//                              the k and angle states are per head, read then overwritten, so the
//                              workgroups that split a head's rows cannot each update them), its
//                              k, k_prev, q and scalars into `kq`; then RPW rows a workgroup
//                              (grid H * ceil(P / RPW), Bsz: 192 at mamba3-187m) -- the same
//                              arithmetic in the same order as the one-dispatch form.
//   mamba3_step_rows_last      one dispatch of the rows' grid: every workgroup runs the head's
//                              prologue itself (reading the old k and angles), counts itself in
//                              `arrived` once they are read, and the head's last to arrive writes
//                              the new k and angles and sets the count back to 0 -- no workgroup
//                              waits on another, so no forward-progress assumption is made.

// The forms' bodies: lib/mamba3_step_folded_body.wgsl; mamba3_step_rows_last with the rows'
// lane sums as subgroup shuffles: shaders/mamba3_step_folded_sg.wgsl.
const SUBGROUPS = false;
fn shuffle_xor(v: f32, mask: u32) -> f32 { return v; }   // unused: SUBGROUPS off
//#include "lib/mamba3_step_folded_body.wgsl"

@compute @workgroup_size(256)
fn mamba3_step_rows_last(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  rows_last_step(wid, lid, 0u);
}
