// Mamba-3 (SISO) one-token step (decode): the recurrence of shaders/mamba3_forward.wgsl for T = 1,
// the four states updated in place. Its per-token scalars come from mamba3_forward.wgsl's
// mamba3_prep run on the one token (rows r = b), so a step is 2 dispatches (prep, step); the
// split exists because inputs + parameters + states need 16 storage bindings, over the 10 a
// browser gives.
//
//   phi = (phi + theta DT) mod 2pi;  k = rot(Bn[g] + B_bias[h], phi), q = rot(Cn[g] + C_bias[h], phi)
//   S   = alpha S + beta v_prev k_prev^T + gamma v k^T;  y = S q + D v;  v_prev, k_prev = v, k
// (DT, alpha, beta, gamma, theta and the packed parameters: see mamba3_forward.wgsl.)
//
// One workgroup of WG threads per (h, b), grid (H, Bsz): phi (threads over i < S), then k, q and
// the old k into workgroup memory (threads over n), then each thread owns state rows p and loops
// over n. Workgroup memory (WS = 3N + S floats): k [N] | k_prev [N] | q [N] | phi [S].
// x [Bsz, *] view H*P wide, Bn/Cn [Bsz, *] views G*N wide, y [Bsz, *] view H*P wide.

const WG = 64u;
const TWO_PI = 6.28318530717959;

override WS: u32 = 416u;   // floats of workgroup memory: 3 N + S (host-set)

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, S: u32, nb: u32, flags: u32,
  a_floor: f32, pw: u32, par: u32, total: u32,        // pw = 4H + S; par = offset of the params
  x_off: u32, x_str: u32, b_off: u32, b_str: u32,     // x, Bn views
  c_off: u32, c_str: u32, y_off: u32, y_str: u32,     // Cn, y views
  dt_off: u32, dt_str: u32, da_off: u32, da_str: u32, // (prep's views, unused here)
  tr_off: u32, tr_str: u32, an_off: u32, an_str: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(9) var<storage, read> pre: array<f32>;       // [Bsz, 4H+S] | B_bias | C_bias | D
@group(0) @binding(10) var<storage, read> x: array<f32>;        // [Bsz, *] view, H*P wide
@group(0) @binding(11) var<storage, read> Bn: array<f32>;       // [Bsz, *] view, G*N wide (normed)
@group(0) @binding(12) var<storage, read> Cn: array<f32>;       // [Bsz, *] view, G*N wide (normed)
@group(0) @binding(13) var<storage, read_write> y: array<f32>;  // [Bsz, *] view, H*P wide
@group(0) @binding(14) var<storage, read_write> s_ang: array<f32>; // [Bsz, H, S], in place
@group(0) @binding(15) var<storage, read_write> s_ssm: array<f32>; // [Bsz, H, P, N], in place
@group(0) @binding(16) var<storage, read_write> s_k: array<f32>;   // [Bsz, H, N], in place
@group(0) @binding(17) var<storage, read_write> s_v: array<f32>;   // [Bsz, H, P], in place

var<workgroup> sh: array<f32, WS>;

// cos_sin / tanh_exact: accurate f32 trigonometry shared with RoPE
//#include "lib/trig.wgsl"

// (sin a, cos a) of an angle kept in [0, 2 pi)
fn sin_cos(a: f32) -> vec2<f32> { return cos_sin(a).yx; }

@compute @workgroup_size(WG)
fn mamba3_step(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let row = b * p.pw;
  let dt = pre[row + h];
  let alpha = pre[row + p.H + h];
  let beta = pre[row + 2u * p.H + h];
  let gamma = pre[row + 3u * p.H + h];
  let Dh = pre[p.par + 2u * p.H * N + h];
  for (var i = lid; i < S; i += WG) {   // each thread owns its angles
    let ph = s_ang[bh * S + i] + pre[row + 4u * p.H + i] * dt;
    sh[3u * N + i] = ph - TWO_PI * floor(ph / TWO_PI);
  }
  for (var n = lid; n < N; n += WG) { sh[N + n] = s_k[bh * N + n]; }
  workgroupBarrier();
  let bo = p.b_off + b * p.b_str + g * N;
  let co = p.c_off + b * p.c_str + g * N;
  let bb = p.par + h * N;
  let cb = p.par + p.H * N + h * N;
  for (var n = lid; n < N; n += WG) {
    let kb = Bn[bo + n] + pre[bb + n];
    let qb = Cn[co + n] + pre[cb + n];
    var kk = kb;
    var qq = qb;
    if (n < 2u * S) {
      let m = n ^ 1u;   // the pair partner
      let kp = Bn[bo + m] + pre[bb + m];
      let qp = Cn[co + m] + pre[cb + m];
      let ph = sh[3u * N + n / 2u];
      let sc = sin_cos(ph);
      let s = sc.x;
      let c = sc.y;
      if ((n & 1u) == 0u) { kk = kb * c - kp * s; qq = qb * c - qp * s; }
      else { kk = kp * s + kb * c; qq = qp * s + qb * c; }
    }
    sh[n] = kk;
    sh[2u * N + n] = qq;
    s_k[bh * N + n] = kk;   // the old k was copied into sh[N + n] before the barrier
  }
  for (var i = lid; i < S; i += WG) { s_ang[bh * S + i] = sh[3u * N + i]; }
  workgroupBarrier();
  for (var pp = lid; pp < P; pp += WG) {
    let v = x[p.x_off + b * p.x_str + h * P + pp];
    let vp = s_v[bh * P + pp];
    let bv = beta * vp;
    let gv = gamma * v;
    let base = (bh * P + pp) * N;
    var acc = 0.0;
    for (var n = 0u; n < N; n++) {
      let s = alpha * s_ssm[base + n] + bv * sh[N + n] + gv * sh[n];
      s_ssm[base + n] = s;
      acc += s * sh[2u * N + n];
    }
    s_v[bh * P + pp] = v;
    y[p.y_off + b * p.y_str + h * P + pp] = acc + Dh * v;
  }
}
