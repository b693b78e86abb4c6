// Mamba-3's per-token scalars: element j of token row r of mamba3_prep's `pre` row
//   [DT (H) | alpha (H) | beta (H) | gamma (H) | theta (S)]    (the math: mamba3_forward.wgsl's header)
// Shared by mamba3_forward.wgsl's mamba3_prep, which stores them for the scans, and
// mamba3_step_folded.wgsl's decode step, which computes its own head's (one dispatch fewer per
// layer). The including file defines, before this include: Params p (H, flags, a_floor), has(),
// fn dt_bias_at(h: u32) -> f32 (dt_bias[h]), and the token's raw in_proj values of row r:
//   fn raw_dt(r: u32, h: u32) -> f32      dd_dt[r, h]   (likewise raw_da: dd_A, raw_trap: trap)
//   fn raw_angle(r: u32, i: u32) -> f32   angles[r, i]
// softplus (threshold 20, exact log1p) and sigmoid, shared with the other kernels:
//#include "lib/activations.wgsl"
// cos_sin / tanh_exact: accurate f32 trigonometry shared with RoPE
//#include "lib/trig.wgsl"

const HEAVY = 2u;          // A activation: heavy tail (else softplus)
const PI = 3.14159265358979;

fn prep_value(r: u32, j: u32) -> f32 {
  let H = p.H;
  if (j >= 4u * H) {   // theta; clamped so tanh never sees a huge argument (exp overflow -> NaN)
    return tanh_exact(clamp(raw_angle(r, j - 4u * H), -10.0, 10.0)) * PI;
  }
  let h = j % H;
  let dt = softplus(raw_dt(r, h) + dt_bias_at(h));
  if (j < H) { return dt; }
  let a = raw_da(r, h);
  var f: f32;
  if (has(HEAVY)) {
    if (a >= 0.0) { f = 1.0 + a; } else { f = 1.0 / (1.0 - a); }
  } else {
    f = softplus(a);
  }
  let alpha = exp(min(-f, -p.a_floor) * dt);
  if (j < 2u * H) { return alpha; }
  let lam = sigmoid(raw_trap(r, h));
  if (j < 3u * H) { return (1.0 - lam) * dt * alpha; }
  return lam * dt;
}
