// Mamba-3's SISO lanes step (lib/mamba3_step_common.wgsl) with mamba3_prep folded in: each
// workgroup computes its own head's DT, alpha, beta, gamma and the S thetas from in_proj's raw
// columns (lib/mamba3_prep.wgsl's prep_value, the same expressions mamba3_prep stores) and reads
// the biases and D from the parameters themselves -- one dispatch fewer per decoded layer.
// Storage bindings: the raw scalars, the parameters, x/Bn/Cn/y, 4 states = 10 -- the tier a
// Mac's Chrome gives (mamba3_step_rows_last: 11 with `arrived`; mamba3_step_head: 7),
// py_engine/ops/mamba3.step_folds_prep, step_last; mamba3_step_folded_one.wgsl reads x, B and
// C through the raw scalars' binding too, 3 fewer, where they lie in that buffer. The body of
// the kernels: lib/mamba3_step_folded_body.wgsl. The four raw inputs
// come in ONE binding: the mixer has in_proj write dd_dt, dd_A, trap and angles into one buffer
// (their views' offsets and strides in p.dt_off .. p.an_str). The layer's dt_bias, B_bias,
// C_bias, D and the norms' weights come in another, `prm`, packed side by side at load
// (nn/mamba3.decode_param_packs; their offsets in `po`): until the thirty-fourth session each
// had a binding of its own (15), and a 10-binding device ran prep and the norms apart.
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

//#include "lib/mamba3_step_folded_body.wgsl"

@group(0) @binding(10) var<storage, read> x: array<f32>;        // [Bsz, *] view, H*P wide
@group(0) @binding(11) var<storage, read> Bn: array<f32>;       // [Bsz, *] view, R*G*N wide
@group(0) @binding(12) var<storage, read> Cn: array<f32>;       // [Bsz, *] view, R*G*N wide

fn x_val(i: u32) -> f32 { return x[i]; }
fn bn_val(i: u32) -> f32 { return Bn[i]; }
fn cn_val(i: u32) -> f32 { return Cn[i]; }
