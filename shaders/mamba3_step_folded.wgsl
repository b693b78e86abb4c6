// Mamba-3's SISO lanes step (lib/mamba3_step_common.wgsl) with mamba3_prep folded in: each
// workgroup computes its own head's DT, alpha, beta, gamma and the S thetas from in_proj's raw
// columns (lib/mamba3_prep.wgsl's prep_value, the same expressions mamba3_prep stores) and reads
// the biases and D from the parameters themselves -- one dispatch fewer per decoded layer (5: three
// in_proj mat-vecs, this step, out_proj with the gate).
// Storage bindings: the raw scalars, 4 parameters, x/Bn/Cn/y, 4 states, 2 norm weights = 15, so
// the host uses it only where the device binds that many (py_engine/ops/mamba3.step_folds_prep;
// the H200 gives 16 through Dawn, SwiftShader 10). The four raw inputs come in ONE binding: the
// mixer has in_proj write dd_dt, dd_A, trap and angles into one buffer (their views' offsets and
// strides in p.dt_off ..  p.an_str).

//#include "lib/mamba3_step_common.wgsl"

@group(0) @binding(1) var<storage, read> raw: array<f32>;       // dd_dt | dd_A | trap | angles views
@group(0) @binding(5) var<storage, read> dt_bias: array<f32>;   // [H]
@group(0) @binding(6) var<storage, read> B_bias: array<f32>;    // [H, N] (SISO: R = 1)
@group(0) @binding(7) var<storage, read> C_bias: array<f32>;    // [H, N]
@group(0) @binding(8) var<storage, read> Dv: array<f32>;        // [H]

fn raw_dt(r: u32, h: u32) -> f32 { return raw[p.dt_off + r * p.dt_str + h]; }
fn raw_da(r: u32, h: u32) -> f32 { return raw[p.da_off + r * p.da_str + h]; }
fn raw_trap(r: u32, h: u32) -> f32 { return raw[p.tr_off + r * p.tr_str + h]; }
fn raw_angle(r: u32, i: u32) -> f32 { return raw[p.an_off + r * p.an_str + i]; }

//#include "lib/mamba3_prep.wgsl"

fn k_bias(h: u32, rk: u32, n: u32) -> f32 { return B_bias[(h * p.R + rk) * p.N + n]; }
fn q_bias(h: u32, rk: u32, n: u32) -> f32 { return C_bias[(h * p.R + rk) * p.N + n]; }
fn theta(b: u32, i: u32) -> f32 { return prep_value(b, 4u * p.H + i); }

fn head_step(b: u32, h: u32) -> HeadStep {
  var t: HeadStep;
  t.dt = prep_value(b, h);
  t.alpha = prep_value(b, p.H + h);
  t.beta = prep_value(b, 2u * p.H + h);
  t.gamma = prep_value(b, 3u * p.H + h);
  t.Dh = Dv[h];
  return t;
}

@compute @workgroup_size(256)
fn mamba3_step_lanes_folded(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
  if (wid.x >= p.H || wid.y >= p.nb) { return; }   // uniform: depends on the workgroup only
  lanes_step(wid.x, wid.y, lid);
}
