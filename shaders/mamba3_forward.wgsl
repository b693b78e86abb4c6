// Mamba-3 (SISO) scan, sequence forward (state-spaces Mamba3 / mamba3_siso_fwd_ref; float64 reference
// tests/reference/mamba3_numpy.py scan_sequential). The one-token step is shaders/mamba3_step.wgsl; it
// reuses mamba3_prep below.
//
// Per token t (row r = b*T + t), head h, group g = h / (H / G):
//   DT    = softplus(dd_dt + dt_bias[h])                     (threshold 20)
//   A     = min(-f(dd_A), -A_floor); f = heavy tail (x >= 0: 1 + x, x < 0: 1/(1 - x)) or softplus
//   lam   = sigmoid(trap);  alpha = exp(A DT);  beta = (1 - lam) DT alpha;  gamma = lam DT
//   theta = tanh(clamp(angles, -10, 10)) pi                  (S angles, shared by all heads)
//   phi  += theta DT;  phi -= 2pi floor(phi / 2pi)            (state [S] per (b, h), kept in [0, 2pi))
//   k = rot(Bn[g] + B_bias[h], phi), q = rot(Cn[g] + C_bias[h], phi): pairs (2i, 2i+1), i < S
//   S_h   = alpha S_h + beta v_prev k_prev^T + gamma v k^T    [P, N],  v = x[t, h*P : (h+1)*P]
//   y     = S_h q + D[h] v                                    (no gate: the caller gates / norms)
//   v_prev, k_prev = v, k     (k_prev is the ROTATED k, bias included)
//
// Two dispatches (the inputs, parameters and four states need 16 storage bindings, more than the
// 10 a browser gives, so the per-token scalars are precomputed and the parameters packed):
//   mamba3_prep  one thread per element of pre (fold grid): pre [Bsz*T, 4H + S] rows
//                [DT (H) | alpha (H) | beta (H) | gamma (H) | theta (S)], then at element `par`
//                the packed parameters [B_bias (H*N) | C_bias (H*N) | D (H)].
//   mamba3_scan  one workgroup of WG threads per (h, b), grid (H, Bsz), sequential in t. Per token
//                the workgroup updates phi (threads over i < S), rotates k and q into workgroup
//                memory (threads over n), then each thread owns state rows p (p = lid, lid + WG ..)
//                and loops over n: S, y. Barriers only between these phases; no atomics, fixed
//                order: deterministic. The state ssm lives in its (in place) storage buffer: one
//                read and one write per element per token (N*P up to 8192 floats does not fit in
//                the 16 KiB of workgroup memory). v_prev is x of the previous row (or the v state).
// Workgroup memory (WS = 3N + S floats, host-set): k double buffer [2][N] (slot t % 2 = k_t, the
// other slot k_{t-1}) | q [N] | phi [S].
// Layout: x [.., H*P], Bn/Cn [.., G*N], dd_dt/dd_A/trap [.., H], angles [.., S] and y [.., H*P] are
// views (element (r, j) at off + r*str + j): Cols windows of in_proj's output. States: angle
// [Bsz, H, S], ssm [Bsz, H, P, N], k [Bsz, H, N], v [Bsz, H, P], read when HAS_INIT (else zeros)
// and overwritten with the final state.

const HAS_INIT = 1u;
const HEAVY = 2u;          // A activation: heavy tail (else softplus)
const WG = 64u;
const PI = 3.14159265358979;
const TWO_PI = 6.28318530717959;

override WS: u32 = 416u;   // floats of workgroup memory: 3 N + S (host-set)

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, S: u32, nb: u32, flags: u32,
  a_floor: f32, pw: u32, par: u32, total: u32,        // pw = 4H + S; par = offset of the params
  x_off: u32, x_str: u32, b_off: u32, b_str: u32,     // x, Bn views
  c_off: u32, c_str: u32, y_off: u32, y_str: u32,     // Cn, y views
  dt_off: u32, dt_str: u32, da_off: u32, da_str: u32, // dd_dt, dd_A views
  tr_off: u32, tr_str: u32, an_off: u32, an_str: u32, // trap, angles views
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dd_dt: array<f32>;     // [Bsz*T, *] view, H wide
@group(0) @binding(2) var<storage, read> dd_A: array<f32>;      // [Bsz*T, *] view, H wide
@group(0) @binding(3) var<storage, read> trap: array<f32>;      // [Bsz*T, *] view, H wide
@group(0) @binding(4) var<storage, read> angles: array<f32>;    // [Bsz*T, *] view, S wide
@group(0) @binding(5) var<storage, read> dt_bias: array<f32>;   // [H]
@group(0) @binding(6) var<storage, read> B_bias: array<f32>;    // [H, N]
@group(0) @binding(7) var<storage, read> C_bias: array<f32>;    // [H, N]
@group(0) @binding(8) var<storage, read> Dv: array<f32>;        // [H]
@group(0) @binding(9) var<storage, read_write> pre: array<f32>; // [Bsz*T, 4H+S] | B_bias | C_bias | D
@group(0) @binding(10) var<storage, read> x: array<f32>;        // [Bsz*T, *] view, H*P wide
@group(0) @binding(11) var<storage, read> Bn: array<f32>;       // [Bsz*T, *] view, G*N wide (normed)
@group(0) @binding(12) var<storage, read> Cn: array<f32>;       // [Bsz*T, *] view, G*N wide (normed)
@group(0) @binding(13) var<storage, read_write> y: array<f32>;  // [Bsz*T, *] view, H*P wide
@group(0) @binding(14) var<storage, read_write> s_ang: array<f32>; // [Bsz, H, S], in place
@group(0) @binding(15) var<storage, read_write> s_ssm: array<f32>; // [Bsz, H, P, N], in place
@group(0) @binding(16) var<storage, read_write> s_k: array<f32>;   // [Bsz, H, N], in place
@group(0) @binding(17) var<storage, read_write> s_v: array<f32>;   // [Bsz, H, P], in place

var<workgroup> sh: array<f32, WS>;

// softplus (threshold 20, exact log1p) and sigmoid, shared with the other kernels:
//#include "lib/activations.wgsl"

// cos_sin / tanh_exact: accurate f32 trigonometry shared with RoPE
//#include "lib/trig.wgsl"

// (sin a, cos a) of an angle kept in [0, 2 pi)
fn sin_cos(a: f32) -> vec2<f32> { return cos_sin(a).yx; }

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }



// Element j of row r of pre: the per-token scalars (see the header).
fn prep_value(r: u32, j: u32) -> f32 {
  let H = p.H;
  if (j >= 4u * H) {   // theta; clamped so tanh never sees a huge argument (exp overflow -> NaN)
    return tanh_exact(clamp(angles[p.an_off + r * p.an_str + j - 4u * H], -10.0, 10.0)) * PI;
  }
  let h = j % H;
  let dt = softplus(dd_dt[p.dt_off + r * p.dt_str + h] + dt_bias[h]);
  if (j < H) { return dt; }
  let a = dd_A[p.da_off + r * p.da_str + h];
  var f: f32;
  if (has(HEAVY)) {
    if (a >= 0.0) { f = 1.0 + a; } else { f = 1.0 / (1.0 - a); }
  } else {
    f = softplus(a);
  }
  let alpha = exp(min(-f, -p.a_floor) * dt);
  if (j < 2u * H) { return alpha; }
  let lam = sigmoid(trap[p.tr_off + r * p.tr_str + h]);
  if (j < 3u * H) { return (1.0 - lam) * dt * alpha; }
  return lam * dt;
}

@compute @workgroup_size(WG)
fn mamba3_prep(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * WG;
  if (k >= p.total) { return; }
  if (k < p.par) {
    pre[k] = prep_value(k / p.pw, k % p.pw);
    return;
  }
  let e = k - p.par;
  let HN = p.H * p.N;
  if (e < HN) { pre[k] = B_bias[e]; } else if (e < 2u * HN) { pre[k] = C_bias[e - HN]; }
  else { pre[k] = Dv[e - 2u * HN]; }
}

// k (into sh[ko + n]) and q (into sh[2N + n]) of token row r for n = lid, lid + WG, ..: bias, then
// the rotation of pair (2i, 2i+1), i < S, by phi_i = sh[3N + i]; dims >= 2S pass through.
fn rotate_kq(r: u32, h: u32, g: u32, ko: u32, lid: u32) {
  let N = p.N;
  let bo = p.b_off + r * p.b_str + g * N;
  let co = p.c_off + r * p.c_str + g * N;
  let bb = p.par + h * N;
  let cb = p.par + p.H * N + h * N;
  for (var n = lid; n < N; n += WG) {
    let kb = Bn[bo + n] + pre[bb + n];
    let qb = Cn[co + n] + pre[cb + n];
    var kk = kb;
    var qq = qb;
    if (n < 2u * p.S) {
      let m = n ^ 1u;   // the pair partner
      let kp = Bn[bo + m] + pre[bb + m];
      let qp = Cn[co + m] + pre[cb + m];
      let ph = sh[3u * N + n / 2u];
      let sc = sin_cos(ph);
      let s = sc.x;
      let c = sc.y;
      if ((n & 1u) == 0u) {   // out[2i] = a c - b s
        kk = kb * c - kp * s;
        qq = qb * c - qp * s;
      } else {                // out[2i+1] = a s + b c
        kk = kp * s + kb * c;
        qq = qp * s + qb * c;
      }
    }
    sh[ko + n] = kk;
    sh[2u * N + n] = qq;
  }
}

@compute @workgroup_size(WG)
fn mamba3_scan(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let init = has(HAS_INIT);
  // phi and k_{-1} (slot 1) from the state, or zeros
  for (var i = lid; i < S; i += WG) {
    var v = 0.0;
    if (init) { v = s_ang[bh * S + i]; }
    sh[3u * N + i] = v;
  }
  for (var n = lid; n < N; n += WG) {
    var v = 0.0;
    if (init) { v = s_k[bh * N + n]; }
    sh[N + n] = v;
  }
  let Dh = pre[p.par + 2u * p.H * N + h];
  workgroupBarrier();
  for (var t = 0u; t < p.T; t++) {
    let r = b * p.T + t;
    let row = r * p.pw;
    let dt = pre[row + h];
    let alpha = pre[row + p.H + h];
    let beta = pre[row + 2u * p.H + h];
    let gamma = pre[row + 3u * p.H + h];
    let cur = (t & 1u) * N;
    let prv = N - cur;
    for (var i = lid; i < S; i += WG) {   // each thread owns its angles
      let ph = sh[3u * N + i] + pre[row + 4u * p.H + i] * dt;
      sh[3u * N + i] = ph - TWO_PI * floor(ph / TWO_PI);
    }
    workgroupBarrier();
    rotate_kq(r, h, g, cur, lid);
    workgroupBarrier();
    for (var pp = lid; pp < P; pp += WG) {
      let v = x[p.x_off + r * p.x_str + h * P + pp];
      var vp = 0.0;
      if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
      else if (init) { vp = s_v[bh * P + pp]; }
      let bv = beta * vp;
      let gv = gamma * v;
      let base = (bh * P + pp) * N;
      let fresh = t == 0u && !init;
      var acc = 0.0;
      for (var n = 0u; n < N; n++) {
        var s0 = 0.0;
        if (!fresh) { s0 = s_ssm[base + n]; }
        let s = alpha * s0 + bv * sh[prv + n] + gv * sh[cur + n];
        s_ssm[base + n] = s;
        acc += s * sh[2u * N + n];
      }
      y[p.y_off + r * p.y_str + h * P + pp] = acc + Dh * v;
    }
    workgroupBarrier();   // q, phi and the k slots are rewritten by the next token
  }
  // final angle, k (the last token's slot) and v states, in place (each read only above)
  let last = ((p.T - 1u) & 1u) * N;
  for (var i = lid; i < S; i += WG) { s_ang[bh * S + i] = sh[3u * N + i]; }
  for (var n = lid; n < N; n += WG) { s_k[bh * N + n] = sh[last + n]; }
  let rl = b * p.T + p.T - 1u;
  for (var pp = lid; pp < P; pp += WG) { s_v[bh * P + pp] = x[p.x_off + rl * p.x_str + h * P + pp]; }
}
