// Mamba-3 (SISO, or MIMO of rank R) one-token step (decode): the recurrence of
// shaders/mamba3_forward.wgsl for T = 1, the four states updated in place (the kernels:
// lib/mamba3_step_common.wgsl). Its per-token scalars come from mamba3_forward.wgsl's mamba3_prep
// run on the one token (rows r = b), so a step is 2 dispatches (prep, step): inputs, parameters
// and states need 16 storage bindings, over the 10 a browser may give. Where the device binds 15,
// the SISO lanes step folds prep in: shaders/mamba3_step_folded.wgsl.

//#include "lib/mamba3_step_common.wgsl"

@group(0) @binding(9) var<storage, read> pre: array<f32>;       // [Bsz, 4H+S] | B_bias | C_bias | D
@group(0) @binding(10) var<storage, read> x: array<f32>;        // [Bsz, *] view, H*P wide
@group(0) @binding(11) var<storage, read> Bn: array<f32>;       // [Bsz, *] view, R*G*N wide
@group(0) @binding(12) var<storage, read> Cn: array<f32>;       // [Bsz, *] view, R*G*N wide
@group(0) @binding(18) var<storage, read> B_normw: array<f32>;  // [N] (NORM_BC)
@group(0) @binding(19) var<storage, read> C_normw: array<f32>;  // [N] (NORM_BC)

fn x_val(i: u32) -> f32 { return x[i]; }
fn bn_val(i: u32) -> f32 { return Bn[i]; }
fn cn_val(i: u32) -> f32 { return Cn[i]; }
fn b_normw(n: u32) -> f32 { return B_normw[n]; }
fn c_normw(n: u32) -> f32 { return C_normw[n]; }

fn k_bias(h: u32, rk: u32, n: u32) -> f32 { return pre[p.par + (h * p.R + rk) * p.N + n]; }
fn q_bias(h: u32, rk: u32, n: u32) -> f32 {
  return pre[p.par + p.H * p.R * p.N + (h * p.R + rk) * p.N + n];
}
fn theta(b: u32, i: u32) -> f32 { return pre[b * p.pw + 4u * p.H + i]; }

fn mx(h: u32, r: u32, pp: u32) -> f32 {
  if (!has(MIMO)) { return 1.0; }
  return pre[p.par + 2u * p.H * p.R * p.N + p.H + (h * p.R + r) * p.P + pp];
}

// mamba3_prep's row of pre
fn head_step(b: u32, h: u32) -> HeadStep {
  let row = b * p.pw;
  var t: HeadStep;
  t.dt = pre[row + h];
  t.alpha = pre[row + p.H + h];
  t.beta = pre[row + 2u * p.H + h];
  t.gamma = pre[row + 3u * p.H + h];
  t.Dh = pre[p.par + 2u * p.H * p.R * p.N + h];
  return t;
}

@compute @workgroup_size(WG)
fn mamba3_step(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let P = p.P;
  let R = p.R;
  let RN = R * N;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let t = head_step(b, h);
  prologue_load(b, h, t.dt, lid);
  workgroupBarrier();
  prologue_rotate(b, h, g, lid);
  workgroupBarrier();
  for (var pp = lid; pp < P; pp += WG) {
    let v = x_val(p.x_off + b * p.x_str + h * P + pp);
    let vp = s_v[bh * P + pp];
    var bv: array<f32, MAX_R>;
    var gv: array<f32, MAX_R>;
    var acc: array<f32, MAX_R>;
    for (var k = 0u; k < R; k++) {
      let w = mx(h, k, pp);
      bv[k] = t.beta * vp * w;
      gv[k] = t.gamma * v * w;
      acc[k] = 0.0;
    }
    let base = (bh * P + pp) * N;
    for (var n = 0u; n < N; n++) {
      var s = t.alpha * s_ssm[base + n];
      for (var k = 0u; k < R; k++) { s += bv[k] * sh[RN + k * N + n] + gv[k] * sh[k * N + n]; }
      s_ssm[base + n] = s;
      for (var k = 0u; k < R; k++) { acc[k] += s * sh[2u * RN + k * N + n]; }
    }
    s_v[bh * P + pp] = v;
    for (var k = 0u; k < R; k++) {
      y[p.y_off + b * p.y_str + (k * p.H + h) * P + pp] = acc[k] + t.Dh * v * mx(h, k, pp);
    }
  }
}

@compute @workgroup_size(256)
fn mamba3_step_lanes(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  if (wid.x >= p.H || wid.y >= p.nb) { return; }   // uniform: depends on the workgroup only
  lanes_step(wid.x, wid.y, lid);
}
