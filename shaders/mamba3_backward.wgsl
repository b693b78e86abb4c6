// Mamba-3 scan (SISO; MIMO of rank R with flag MIMO), backward (py_engine/ops/mamba3_backward.py); the
// forward is shaders/mamba3_forward.wgsl (same per-token math, same f32 sin_cos / tanh_exact of lib/trig.wgsl).
//
// Forward per (b, h), token t (see mamba3_forward.wgsl): phi_t = phi_{t-1} + theta_t DT_t,
//   k_t = rot(kb_t, phi_t), q_t = rot(qb_t, phi_t)  (kb = Bn[g] + B_bias[h], qb = Cn[g] + C_bias[h]),
//   S_t = alpha_t S_{t-1} + beta_t v_{t-1} k_{t-1}^T + gamma_t v_t k_t^T,  y_t = S_t q_t + D v_t.
// Reverse-time adjoint (dS_t = total gradient of S_t; dS_T = 0):
//   dS_t = alpha_{t+1} dS_{t+1} + dy_t q_t^T;   dq_t = S_t^T dy_t
//   dv_t = D dy_t + gamma_t dS_t k_t + beta_{t+1} dS_{t+1} k_t   (the trapezoid's coupling to t+1)
//   dk_t = gamma_t dS_t^T v_t + beta_{t+1} dS_{t+1}^T v_t
//   dalpha_t = <dS_t, S_{t-1}>,  dbeta_t = v_{t-1}^T dS_t k_{t-1},  dgamma_t = v_t^T dS_t k_t
//   rotation: dkb = rot(dk, -phi); dphi_t[i] = dk[2i+1] k[2i] - dk[2i] k[2i+1] (+ the same for q)
//   angles are cumulative: Gphi_t = sum_{s >= t} dphi_s;  dtheta_t = Gphi_t DT_t;  DT gets Gphi_t . theta_t
//   dDT = dalpha alpha A + dbeta (1-lam) alpha (1 + A DT) + dgamma lam + Gphi . theta
//   dA  = dalpha alpha DT + dbeta (1-lam) alpha DT^2;   dlam = (dgamma - dbeta alpha) DT
//   ddd_dt = dDT sigmoid(dd_dt + dt_bias) (1 past softplus' threshold 20);  dtrap = dlam lam (1-lam)
//   ddd_A = dA dA/ddd_A, dA/ddd_A = -f'(dd_A) where -f < -A_floor, else 0 (the clamp binds)
//   dangles = sum_h dtheta_h pi (1 - tanh^2) (0 where |angles| > 10: the forward clamps)
// MIMO (rank R; SISO is R = 1, mimo_x = 1): v_r = x mimo_x_r, k_r / q_r rotated in pairs (i, i + N/2);
//   S_t = alpha S + beta sum_r v_{r,t-1} k_{r,t-1}^T + gamma sum_r v_r k_r^T;  y_r = S q_r + D v_r. Then
//   dS_t = alpha_{t+1} dS_{t+1} + sum_r dy_r q_r^T;  dq_r = S_t^T dy_r;  dv_r = D dy_r + gamma dS_t k_r
//   + beta_{t+1} dS_{t+1} k_r;  dk_r = (gamma dS_t^T + beta_{t+1} dS_{t+1}^T) v_r;  dx = sum_r mimo_x_r dv_r;
//   dmimo_x_r = sum_t x_t dv_{r,t} (the beta_{t+1} part taken at step t+1 with v_prev, which also covers the
//   initial v state);  dbeta, dgamma, dD and dphi sum over r.
//
// 8 + W dispatches (prep, scan once per token window (W = 1 for short sequences), 6 x tok, par):
//   mamba3_bwd_prep  one thread per element (fold grid) of: per-(row, head) scalars sc [lam, A,
//                    dA/ddd_A, sigmoid(dd_dt + dt_bias)], then the initial states (or zeros) into
//                    their work slots: ssm -> loc slot 0 (phase A's running state), angle, k, v.
//   mamba3_bwd_scan  one workgroup per (h, b), grid (H, Bsz). Phase A re-runs the forward token by
//                    token (threads over p, loop over n; the state in place in loc slot 0) and keeps
//                    a checkpoint every C tokens (ck slot c = S_{cC-1}, the state entering chunk c;
//                    slot 0 the initial state), rotated k_t | q_t and phi_t of every token in work.
//                    Phase B walks t backwards; at the last token of each chunk it recomputes the
//                    chunk's states S_t from its checkpoint into loc (recompute_chunk: C states, not
//                    T), then per token: (1) threads over
//                    p: dS (in work, in place), dx, per-p partial sums; (2) threads over n: dq, dk;
//                    (3) threads over rope pairs: un-rotate into dkq, dphi, the running Gphi;
//                    (4) thread 0: the scalar chain (fixed order sums over p and i) -> ddd_dt, ddd_A,
//                    dtrap into sc. Barriers only; no atomics.
//   mamba3_bwd_tok   6 dispatches, one per token output (`which`; Cols views of one gradient buffer
//                    may not be bound writable twice in one dispatch), one thread per element: dBn / dCn
//                    (sum over the H/G heads of the group, fixed order), dangles (sum over heads),
//                    ddd_dt / ddd_A / dtrap (copied from sc, where the scan left them).
//   mamba3_bwd_par   one thread per parameter element: ddt_bias, dB_bias, dC_bias (sums over rows
//                    b*T + t in order), dD and (MIMO) dmimo_x (sums over b of the per-(b, h) partials).
//                    Row windows: one dispatch sums rows [a0, a1) (dD / dmimo_x: the b whose row b*T
//                    lies there); the first (a0 == 0) writes, later ones add -- a long Bsz*T is split
//                    by the host so no thread passes lavapipe's loop cap (ops/loop_budget.py).
// Work layout (floats; bh = b*H + h, r = b*T + t, RN = R*N): see _work_layout in the host (o_* fields):
//   ck [bh, ceil(T/C), P, N] (checkpoints) | phi0 [bh, S] | k0 [bh, RN] | v0 [bh, P] |
//   kq [bh, T, 2RN] (k_r | q_r rotated) | ph [bh, T, S] | ds [bh, P, N] | dkq [r, H, 2RN] (dkb_r |
//   dqb_r) | dth [r, H, S] | dDp [bh] | sc [r, H, 4] | dmx [bh, R, P] (MIMO: per-(b, h) dmimo_x
//   partials) | cy [bh, P + RN + S] (phase B's carries cv | kc | Gphi between token windows; dD
//   carries in dDp) | loc [bh, C, P, N] (the states of one
//   chunk; slot 0 doubles as phase A's running state)
// Token windows: the scan dispatch walks phase A over [a0, a1) and phase B over [b0, b1) (reverse);
// the host splits a long sequence into several dispatches (A windows forward, then B windows from
// the end) because lavapipe silently ends an invocation's loops after 65535 passes in all (see
// ops/mamba3_windows.py). Everything a window needs from the previous one is in `work`: phase A's
// phi_{a0-1} in ph, k_{t-1} in kq, S_{a0-1} in loc slot 0; phase B's dS in ds, the carries in cy /
// dDp and the states of the chunk it is in (recomputed at the chunk's last token, whichever window
// that was) in loc.
// Workgroup memory (WS = 3RN + 4S + 5P floats, host-set): kc [RN] (beta_{t+1} dS_{t+1}^T v_{r,t} carry) |
//   dk [RN] | dq [RN] | phi [S] | Gphi [S] | pt [S] (Gphi theta) | (unused) [S] | cv [P] (dx carry) | red [4P].

const HAS_INIT = 1u;
const HEAVY = 2u;
const MIMO = 4u;
const MAX_R = 8u;
const WG = 64u;
const PI = 3.14159265358979;
const TWO_PI = 6.28318530717959;

override WS: u32 = 1024u;

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, S: u32, nb: u32, flags: u32,
  a_floor: f32, pw: u32, total: u32, ntok: u32,        // pw = 4H + S (pre row); total/ntok: grid sizes
  o_ck: u32, o_phi0: u32, o_k0: u32, o_v0: u32,
  o_kq: u32, o_ph: u32, o_ds: u32, o_dkq: u32,
  o_dth: u32, o_dDp: u32, o_sc: u32, npar: u32,
  x_off: u32, x_str: u32, b_off: u32, b_str: u32,     // x, Bn views
  c_off: u32, c_str: u32, dy_off: u32, dy_str: u32,   // Cn, dy views
  dt_off: u32, dt_str: u32, da_off: u32, da_str: u32, // dd_dt, dd_A views
  tr_off: u32, tr_str: u32, an_off: u32, an_str: u32, // trap, angles views
  dx_off: u32, dx_str: u32, gb_off: u32, gb_str: u32,   // dx; tok's output view
  which: u32,     // tok: 0 dBn, 1 dCn, 2 dangles, 3 ddd_dt, 4 ddd_A, 5 dtrap
  R: u32, o_dmx: u32, o_cy: u32,                      // MIMO rank (1: SISO); dmx, cy regions
  a0: u32, a1: u32, b0: u32, b1: u32,                 // scan: phase A walks tokens [a0, a1), phase B
                                                      // tokens b1-1 down to b0 (empty: a0 == a1)
  C: u32, o_loc: u32, _p0: u32, _p1: u32,             // checkpoint interval; the loc region
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> work: array<f32>;   // see the work layout above
// prep
@group(0) @binding(2) var<storage, read> dd_dt: array<f32>;        // [Bsz*T, *] view, H wide
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;      // [H]
@group(0) @binding(4) var<storage, read> dd_A: array<f32>;         // [Bsz*T, *] view, H wide
@group(0) @binding(5) var<storage, read> trap: array<f32>;         // [Bsz*T, *] view, H wide
@group(0) @binding(6) var<storage, read> i_ang: array<f32>;        // [Bsz, H, S] initial angle
@group(0) @binding(7) var<storage, read> i_ssm: array<f32>;        // [Bsz, H, P, N] initial ssm
@group(0) @binding(8) var<storage, read> i_k: array<f32>;          // [Bsz, R, H, N] initial (rotated) k
@group(0) @binding(9) var<storage, read> i_v: array<f32>;          // [Bsz, H, P] initial v
// scan
@group(0) @binding(10) var<storage, read> pre: array<f32>;         // forward's pre: [Bsz*T, 4H+S] | B_bias | C_bias | D (| mimo_x)
@group(0) @binding(11) var<storage, read> x: array<f32>;           // [Bsz*T, *] view, H*P wide
@group(0) @binding(12) var<storage, read> dy: array<f32>;          // [Bsz*T, *] view, R*H*P wide
@group(0) @binding(13) var<storage, read> Bn: array<f32>;          // [Bsz*T, *] view, R*G*N wide
@group(0) @binding(14) var<storage, read> Cn: array<f32>;          // [Bsz*T, *] view, R*G*N wide
@group(0) @binding(15) var<storage, read_write> dx: array<f32>;    // [Bsz*T, *] view, H*P wide
// tok (one output per dispatch: Cols views of one gradient buffer must not be bound writable twice)
@group(0) @binding(19) var<storage, read> angles: array<f32>;      // [Bsz*T, *] view, S wide
@group(0) @binding(20) var<storage, read_write> gout: array<f32>;  // output `which`: [Bsz*T, *] view
// par
@group(0) @binding(23) var<storage, read_write> g_mx: array<f32>;  // [H, R, P] (MIMO; else a dummy)
@group(0) @binding(24) var<storage, read_write> g_dtb: array<f32>; // [H]
@group(0) @binding(25) var<storage, read_write> g_bb: array<f32>;  // [H, R, N]
@group(0) @binding(26) var<storage, read_write> g_cb: array<f32>;  // [H, R, N]
@group(0) @binding(27) var<storage, read_write> g_D: array<f32>;   // [H]

var<workgroup> sh: array<f32, WS>;

//#include "lib/activations.wgsl"

// cos_sin / tanh_exact: accurate f32 trigonometry shared with RoPE
//#include "lib/trig.wgsl"

// (sin a, cos a) of an angle kept in [0, 2 pi)
fn sin_cos(a: f32) -> vec2<f32> { return cos_sin(a).yx; }

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// The rotation pair of dim n < N: vec4(partner, angle index, first (1) / second (0), rotated (1) / not (0)).
// SISO: pairs (2i, 2i+1), i < S;  MIMO: pairs (i, i + N/2), i < S.
fn pair_of(n: u32) -> vec4<u32> {
  if (has(MIMO)) {
    let hN = p.N / 2u;
    if (n < p.S) { return vec4<u32>(n + hN, n, 1u, 1u); }
    if (n >= hN && n < hN + p.S) { return vec4<u32>(n - hN, n - hN, 0u, 1u); }
    return vec4<u32>(n, 0u, 0u, 0u);
  }
  if (n < 2u * p.S) { return vec4<u32>(n ^ 1u, n / 2u, select(0u, 1u, (n & 1u) == 0u), 1u); }
  return vec4<u32>(n, 0u, 0u, 0u);
}

// The two dims of angle pair i: (first, second)
fn dims_of(i: u32) -> vec2<u32> {
  if (has(MIMO)) { return vec2<u32>(i, i + p.N / 2u); }
  return vec2<u32>(2u * i, 2u * i + 1u);
}

// mimo_x[h, r, pp] from the forward's pre (1 for SISO)
fn mx(h: u32, r: u32, pp: u32) -> f32 {
  if (!has(MIMO)) { return 1.0; }
  let par = p.nb * p.T * p.pw;
  return pre[par + 2u * p.H * p.R * p.N + p.H + (h * p.R + r) * p.P + pp];
}

@compute @workgroup_size(WG)
fn mamba3_bwd_prep(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * WG;
  if (e >= p.total) { return; }
  let H = p.H;
  let rh = p.nb * p.T * H;
  if (e < rh) {
    let r = e / H;
    let h = e % H;
    let a = dd_A[p.da_off + r * p.da_str + h];
    var f: f32;
    var fp: f32;
    if (has(HEAVY)) {
      if (a >= 0.0) { f = 1.0 + a; fp = 1.0; } else { f = 1.0 / (1.0 - a); fp = f * f; }
    } else {
      f = softplus(a);
      if (a > 20.0) { fp = 1.0; } else { fp = sigmoid(a); }
    }
    let A = min(-f, -p.a_floor);
    var dA = 0.0;
    if (-f < -p.a_floor) { dA = -fp; }
    let u = dd_dt[p.dt_off + r * p.dt_str + h] + dt_bias[h];
    var su = 1.0;
    if (u <= 20.0) { su = sigmoid(u); }
    let o = p.o_sc + e * 4u;
    work[o] = sigmoid(trap[p.tr_off + r * p.tr_str + h]);
    work[o + 1u] = A;
    work[o + 2u] = dA;
    work[o + 3u] = su;
    return;
  }
  // initial states: ssm into st slot 0, then angle, k, v (zeros without HAS_INIT)
  let init = has(HAS_INIT);
  let PN = p.P * p.N;
  let nbh = p.nb * H;
  let RN = p.R * p.N;
  var i = e - rh;
  if (i < nbh * PN) {
    let bh = i / PN;
    var v = 0.0;
    if (init) { v = i_ssm[i]; }
    work[p.o_loc + bh * p.C * PN + i % PN] = v;   // loc slot 0: phase A's running state
    return;
  }
  i -= nbh * PN;
  if (i < nbh * p.S) {
    var v = 0.0;
    if (init) { v = i_ang[i]; }
    work[p.o_phi0 + i] = v;
    return;
  }
  i -= nbh * p.S;
  if (i < nbh * RN) {          // work k0 [b, h, r, n] <- state k [b, r, h, n]
    var v = 0.0;
    if (init) {
      let bh = i / RN;
      let rk = (i % RN) / p.N;
      v = i_k[(((bh / H) * p.R + rk) * H + bh % H) * p.N + i % p.N];
    }
    work[p.o_k0 + i] = v;
    return;
  }
  i -= nbh * RN;
  var v = 0.0;
  if (init) { v = i_v[i]; }
  work[p.o_v0 + i] = v;
}

// workgroup memory offsets
fn KC() -> u32 { return 0u; }
fn DK() -> u32 { return p.R * p.N; }
fn DQ() -> u32 { return 2u * p.R * p.N; }
fn PHI() -> u32 { return 3u * p.R * p.N; }
fn GPH() -> u32 { return 3u * p.R * p.N + p.S; }
fn PT() -> u32 { return 3u * p.R * p.N + 2u * p.S; }
fn CV() -> u32 { return 3u * p.R * p.N + 4u * p.S; }
fn RED() -> u32 { return 3u * p.R * p.N + 4u * p.S + p.P; }

// Phase B's recompute of one chunk: S_t for t in [cs, ce) into loc slots t - cs, from the checkpoint
// S_{cs-1} at `ck` and the k_t saved in kq by phase A; threads own state rows p (no barrier inside),
// the same arithmetic in the same order as phase A, so the states are bit-for-bit phase A's.
fn recompute_chunk(b: u32, h: u32, bh: u32, cs: u32, ce: u32, ck: u32, locb: u32, lid: u32) {
  let N = p.N;
  let P = p.P;
  let R = p.R;
  let RN = R * N;
  let PN = P * N;
  let kqb = p.o_kq + bh * p.T * 2u * RN;
  for (var t = cs; t < ce; t++) {
    let r = b * p.T + t;
    let row = r * p.pw;
    let alpha = pre[row + p.H + h];
    let beta = pre[row + 2u * p.H + h];
    let gamma = pre[row + 3u * p.H + h];
    var kpo = p.o_k0 + bh * RN;                // k_{t-1}
    if (t > 0u) { kpo = kqb + (t - 1u) * 2u * RN; }
    let ko = kqb + t * 2u * RN;
    var src = ck;
    if (t > cs) { src = locb + (t - cs - 1u) * PN; }
    let dst = locb + (t - cs) * PN;
    for (var pp = lid; pp < P; pp += WG) {
      let v = x[p.x_off + r * p.x_str + h * P + pp];
      var vp = work[p.o_v0 + bh * P + pp];
      if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
      var bv: array<f32, MAX_R>;
      var gv: array<f32, MAX_R>;
      for (var k = 0u; k < R; k++) {
        let w = mx(h, k, pp);
        bv[k] = beta * vp * w;
        gv[k] = gamma * v * w;
      }
      for (var n = 0u; n < N; n++) {
        var s = alpha * work[src + pp * N + n];
        for (var k = 0u; k < R; k++) {
          s += bv[k] * work[kpo + k * N + n] + gv[k] * work[ko + k * N + n];
        }
        work[dst + pp * N + n] = s;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn mamba3_bwd_scan(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let T = p.T;
  let H = p.H;
  let R = p.R;
  let RN = R * N;
  let PN = P * N;
  let g = h / (H / p.G);
  let bh = b * H + h;
  let C = p.C;
  let ckb = p.o_ck + bh * ((T + C - 1u) / C) * PN;   // checkpoint c (S before chunk c) at ckb + c*PN
  let locb = p.o_loc + bh * C * PN;           // S_t of the chunk walked back at locb + (t % C)*PN;
                                              // slot 0 is phase A's running state
  let kqb = p.o_kq + bh * T * 2u * RN;        // kq of token t at kqb + t*2RN: k_r | q_r
  let phb = p.o_ph + bh * T * S;
  let dsb = p.o_ds + bh * PN;
  let mxb = p.o_dmx + bh * R * P;             // dmimo_x partials of (b, h)
  let par = p.nb * T * p.pw;                  // the packed parameters in pre
  let Dh = pre[par + 2u * H * RN + h];
  // ---- phase A: the forward again, keeping S_t, k_t | q_t, phi_t (tokens [a0, a1))
  for (var i = lid; i < S; i += WG) {
    var ph = work[p.o_phi0 + bh * S + i];
    if (p.a0 > 0u) { ph = work[phb + (p.a0 - 1u) * S + i]; }
    sh[PHI() + i] = ph;
  }
  workgroupBarrier();
  for (var t = p.a0; t < p.a1; t++) {
    let r = b * T + t;
    let row = r * p.pw;
    let dt = pre[row + h];
    let alpha = pre[row + H + h];
    let beta = pre[row + 2u * H + h];
    let gamma = pre[row + 3u * H + h];
    for (var i = lid; i < S; i += WG) {
      let ph0 = sh[PHI() + i] + pre[row + 4u * H + i] * dt;
      let ph = ph0 - TWO_PI * floor(ph0 / TWO_PI);
      sh[PHI() + i] = ph;
      work[phb + t * S + i] = ph;
    }
    workgroupBarrier();
    for (var e = lid; e < RN; e += WG) {
      let rk = e / N;
      let n = e % N;
      let bo = p.b_off + r * p.b_str + (rk * p.G + g) * N;
      let co = p.c_off + r * p.c_str + (rk * p.G + g) * N;
      let pbb = par + (h * R + rk) * N;          // B_bias[h, rk]
      let pcb = par + H * RN + (h * R + rk) * N; // C_bias[h, rk]
      let kb = Bn[bo + n] + pre[pbb + n];
      let qb = Cn[co + n] + pre[pcb + n];
      var kk = kb;
      var qq = qb;
      let pr = pair_of(n);
      if (pr.w == 1u) {
        let m = pr.x;
        let kp = Bn[bo + m] + pre[pbb + m];
        let qp = Cn[co + m] + pre[pcb + m];
        let sc = sin_cos(sh[PHI() + pr.y]);
        if (pr.z == 1u) {
          kk = kb * sc.y - kp * sc.x;
          qq = qb * sc.y - qp * sc.x;
        } else {
          kk = kp * sc.x + kb * sc.y;
          qq = qp * sc.x + qb * sc.y;
        }
      }
      work[kqb + t * 2u * RN + e] = kk;
      work[kqb + t * 2u * RN + RN + e] = qq;
    }
    storageBarrier();
    workgroupBarrier();
    var kpo = p.o_k0 + bh * RN;                // k_{t-1}
    if (t > 0u) { kpo = kqb + (t - 1u) * 2u * RN; }
    let ko = kqb + t * 2u * RN;
    for (var pp = lid; pp < P; pp += WG) {
      let v = x[p.x_off + r * p.x_str + h * P + pp];
      var vp = work[p.o_v0 + bh * P + pp];
      if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
      var bv: array<f32, MAX_R>;
      var gv: array<f32, MAX_R>;
      for (var k = 0u; k < R; k++) {
        let w = mx(h, k, pp);
        bv[k] = beta * vp * w;
        gv[k] = gamma * v * w;
      }
      let s0 = locb + pp * N;                  // S_{t-1} in, S_t out (each thread its own rows)
      let ck = t % C == 0u;                    // a chunk starts: keep S_{t-1}, its checkpoint
      let c0 = ckb + (t / C) * PN + pp * N;
      for (var n = 0u; n < N; n++) {
        let old = work[s0 + n];
        if (ck) { work[c0 + n] = old; }
        var s = alpha * old;
        for (var k = 0u; k < R; k++) {
          s += bv[k] * work[kpo + k * N + n] + gv[k] * work[ko + k * N + n];
        }
        work[s0 + n] = s;
      }
    }
    storageBarrier();
    workgroupBarrier();
  }
  // ---- phase B: reverse time (tokens b1 - 1 down to b0)
  var dD = 0.0;            // thread 0's running sum of dy . v
  var a_next = 0.0;        // alpha_{t+1}
  let cyb = p.o_cy + bh * (P + RN + S);
  if (p.b0 < p.b1 && p.b1 < T) {   // a later window ran: its carries (each thread reloads its own)
    for (var pp = lid; pp < P; pp += WG) { sh[CV() + pp] = work[cyb + pp]; }
    for (var e = lid; e < RN; e += WG) { sh[KC() + e] = work[cyb + P + e]; }
    for (var i = lid; i < S; i += WG) { sh[GPH() + i] = work[cyb + P + RN + i]; }
    dD = work[p.o_dDp + bh];
    a_next = pre[(b * T + p.b1) * p.pw + H + h];
    workgroupBarrier();
  }
  for (var tt = T - p.b1; tt < T - p.b0; tt++) {
    let t = T - 1u - tt;
    let last = tt == 0u;
    let r = b * T + t;
    let row = r * p.pw;
    let dt = pre[row + h];
    let alpha = pre[row + H + h];
    let beta = pre[row + 2u * H + h];
    let gamma = pre[row + 3u * H + h];
    var kpo = p.o_k0 + bh * RN;
    if (t > 0u) { kpo = kqb + (t - 1u) * 2u * RN; }
    let ko = kqb + t * 2u * RN;
    let dyo = p.dy_off + r * p.dy_str;
    let c = t / C;
    let cs = c * C;                            // the chunk [cs, min(T, cs + C)) holding t
    if (t + 1u == min(T, cs + C)) {            // its last token: S_cs .. S_t again from checkpoint c
      recompute_chunk(b, h, bh, cs, t + 1u, ckb + c * PN, locb, lid);
      storageBarrier();
      workgroupBarrier();
    }
    var sprev = ckb + c * PN;                  // S_{t-1}: the checkpoint at the chunk's first token
    if (t > cs) { sprev = locb + (t - cs - 1u) * PN; }
    let scur = locb + (t - cs) * PN;           // S_t
    // (1) threads over p: dS_t = alpha_{t+1} dS_{t+1} + sum_r dy_r q_r^T; dx; partial sums
    for (var pp = lid; pp < P; pp += WG) {
      let v = x[p.x_off + r * p.x_str + h * P + pp];
      var vp = work[p.o_v0 + bh * P + pp];
      if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
      var dyr: array<f32, MAX_R>;
      var sk: array<f32, MAX_R>;
      var skp: array<f32, MAX_R>;
      for (var k = 0u; k < R; k++) {
        dyr[k] = dy[dyo + (k * H + h) * P + pp];
        sk[k] = 0.0;
        skp[k] = 0.0;
      }
      let sp = sprev + pp * N;                 // S_{t-1} row pp
      let dr = dsb + pp * N;
      var sa = 0.0;
      for (var n = 0u; n < N; n++) {
        var d = 0.0;
        for (var k = 0u; k < R; k++) { d += dyr[k] * work[ko + RN + k * N + n]; }
        if (!last) { d += a_next * work[dr + n]; }
        work[dr + n] = d;
        for (var k = 0u; k < R; k++) {
          sk[k] += d * work[ko + k * N + n];
          skp[k] += d * work[kpo + k * N + n];
        }
        sa += d * work[sp + n];
      }
      var carry = 0.0;
      if (!last) { carry = sh[CV() + pp]; }
      var dxa = 0.0;
      var cnew = 0.0;
      var db = 0.0;
      var dg = 0.0;
      var dd = 0.0;
      for (var k = 0u; k < R; k++) {
        let w = mx(h, k, pp);
        let dv = Dh * dyr[k] + gamma * sk[k];   // + beta_{t+1} dS_{t+1} k_r: in carry / next step
        dxa += w * dv;
        cnew += w * beta * skp[k];
        db += vp * w * skp[k];
        dg += v * w * sk[k];
        dd += dyr[k] * v * w;
        if (has(MIMO)) {
          var acc = x[p.x_off + r * p.x_str + h * P + pp] * dv + vp * beta * skp[k];
          if (!last) { acc += work[mxb + k * P + pp]; }
          work[mxb + k * P + pp] = acc;
        }
      }
      dx[p.dx_off + r * p.dx_str + h * P + pp] = dxa + carry;
      sh[CV() + pp] = cnew;
      sh[RED() + pp] = sa;
      sh[RED() + P + pp] = db;
      sh[RED() + 2u * P + pp] = dg;
      sh[RED() + 3u * P + pp] = dd;
    }
    storageBarrier();
    workgroupBarrier();
    // (2) threads over (r, n): dq_r = S_t^T dy_r, dk_r = gamma dS_t^T v_r + carry from t+1
    for (var e = lid; e < RN; e += WG) {
      let k = e / N;
      let n = e % N;
      var aq = 0.0;
      var ac = 0.0;
      var ap = 0.0;
      for (var pp = 0u; pp < P; pp++) {
        let w = mx(h, k, pp);
        let dyp = dy[dyo + (k * H + h) * P + pp];
        let v = x[p.x_off + r * p.x_str + h * P + pp] * w;
        var vp = work[p.o_v0 + bh * P + pp];
        if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
        let d = work[dsb + pp * N + n];
        aq += work[scur + pp * N + n] * dyp;
        ac += d * v;
        ap += d * vp * w;
      }
      var carry = 0.0;
      if (!last) { carry = sh[KC() + e]; }
      sh[DK() + e] = gamma * ac + carry;
      sh[DQ() + e] = aq;
      sh[KC() + e] = beta * ap;
    }
    workgroupBarrier();
    // (3) un-rotate dk_r, dq_r into dkq; dphi (summed over ranks) and the running Gphi
    let dko = p.o_dkq + (r * H + h) * 2u * RN;
    for (var i = lid; i < S; i += WG) {
      let sc = sin_cos(work[phb + t * S + i]);
      let s = sc.x;
      let c = sc.y;
      let nn = dims_of(i);
      var dphi = 0.0;
      for (var k = 0u; k < R; k++) {
        let n0 = k * N + nn.x;
        let n1 = k * N + nn.y;
        let dk0 = sh[DK() + n0];
        let dk1 = sh[DK() + n1];
        let dq0 = sh[DQ() + n0];
        let dq1 = sh[DQ() + n1];
        work[dko + n0] = dk0 * c + dk1 * s;
        work[dko + n1] = dk1 * c - dk0 * s;
        work[dko + RN + n0] = dq0 * c + dq1 * s;
        work[dko + RN + n1] = dq1 * c - dq0 * s;
        dphi += dk1 * work[ko + n0] - dk0 * work[ko + n1]
              + dq1 * work[ko + RN + n0] - dq0 * work[ko + RN + n1];
      }
      var G = dphi;
      if (!last) { G += sh[GPH() + i]; }
      sh[GPH() + i] = G;
      work[p.o_dth + (r * H + h) * S + i] = G * dt;
      sh[PT() + i] = G * pre[row + 4u * H + i];
    }
    for (var e = lid; e < RN; e += WG) {      // the dims no pair rotates pass straight through
      if (pair_of(e % N).w == 0u) {
        work[dko + e] = sh[DK() + e];
        work[dko + RN + e] = sh[DQ() + e];
      }
    }
    workgroupBarrier();
    // (4) thread 0: the per-token scalar chain, fixed-order sums
    if (lid == 0u) {
      var da = 0.0;
      var db = 0.0;
      var dg = 0.0;
      for (var pp = 0u; pp < P; pp++) {
        da += sh[RED() + pp];
        db += sh[RED() + P + pp];
        dg += sh[RED() + 2u * P + pp];
        dD += sh[RED() + 3u * P + pp];
      }
      var dphit = 0.0;
      for (var i = 0u; i < S; i++) { dphit += sh[PT() + i]; }
      let so = p.o_sc + (r * H + h) * 4u;
      let lam = work[so];
      let A = work[so + 1u];
      let dDT = da * alpha * A + db * (1.0 - lam) * alpha * (1.0 + A * dt) + dg * lam + dphit;
      let dA = da * alpha * dt + db * (1.0 - lam) * alpha * dt * dt;
      let dlam = (dg - db * alpha) * dt;
      // into sc (this token's inputs are used up): [ddd_dt, ddd_A, dtrap], copied out by tok
      work[so] = dDT * work[so + 3u];
      work[so + 1u] = dA * work[so + 2u];
      work[so + 2u] = dlam * lam * (1.0 - lam);
    }
    a_next = alpha;
    storageBarrier();
    workgroupBarrier();
  }
  if (p.b0 < p.b1 && p.b0 > 0u) {   // an earlier window follows: keep the carries
    for (var pp = lid; pp < P; pp += WG) { work[cyb + pp] = sh[CV() + pp]; }
    for (var e = lid; e < RN; e += WG) { work[cyb + P + e] = sh[KC() + e]; }
    for (var i = lid; i < S; i += WG) { work[cyb + P + RN + i] = sh[GPH() + i]; }
  }
  if (lid == 0u && p.b0 < p.b1) { work[p.o_dDp + bh] = dD; }
}

@compute @workgroup_size(WG)
fn mamba3_bwd_tok(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * WG;
  if (e >= p.ntok) { return; }   // ntok = Bsz*T*width of output `which`
  let N = p.N;
  let H = p.H;
  let GN = p.G * N;
  let RN = p.R * N;
  let wh = p.which;
  if (wh >= 3u) {      // ddd_dt, ddd_A, dtrap: sc slots 0, 1, 2
    let r = e / H;
    let h = e % H;
    gout[p.gb_off + r * p.gb_str + h] = work[p.o_sc + e * 4u + wh - 3u];
    return;
  }
  if (wh < 2u) {       // dBn / dCn (rows (rank, group, n)): sum over the heads of group g, in order
    let RGN = p.R * GN;
    let r = e / RGN;
    let jj = e % RGN;
    let rk = jj / GN;
    let g = (jj % GN) / N;
    let n = jj % N;
    let hg = H / p.G;
    let half = wh * RN + rk * N;
    var acc = 0.0;
    for (var k = 0u; k < hg; k++) {
      acc += work[p.o_dkq + (r * H + g * hg + k) * 2u * RN + half + n];
    }
    gout[p.gb_off + r * p.gb_str + jj] = acc;
    return;
  }
  let r = e / p.S;
  let i = e % p.S;
  var acc = 0.0;
  for (var h = 0u; h < H; h++) { acc += work[p.o_dth + (r * H + h) * p.S + i]; }
  let a = angles[p.an_off + r * p.an_str + i];
  var d = 0.0;
  if (abs(a) <= 10.0) {
    let th = tanh_exact(a);
    d = PI * (1.0 - th * th);
  }
  gout[p.gb_off + r * p.gb_str + i] = acc * d;
}

@compute @workgroup_size(WG)
fn mamba3_bwd_par(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * WG;
  if (e >= p.npar) { return; }
  let H = p.H;
  let RN = p.R * p.N;
  let HRN = H * RN;
  let first = p.a0 == 0u;                   // the first row window writes, later ones add
  let b0 = (p.a0 + p.T - 1u) / p.T;         // sequences whose first row b*T is in [a0, a1)
  let b1 = (p.a1 + p.T - 1u) / p.T;
  if (e < H) {
    var acc = 0.0;
    for (var r = p.a0; r < p.a1; r++) { acc += work[p.o_sc + (r * H + e) * 4u]; }
    if (first) { g_dtb[e] = acc; } else { g_dtb[e] += acc; }
    return;
  }
  if (e < H + 2u * HRN) {   // dB_bias / dC_bias [H, R, N]
    let k = e - H;
    let hn = k % HRN;
    let h = hn / RN;
    let rn = hn % RN;
    var half = 0u;
    if (k >= HRN) { half = RN; }
    var acc = 0.0;
    for (var r = p.a0; r < p.a1; r++) { acc += work[p.o_dkq + (r * H + h) * 2u * RN + half + rn]; }
    if (k < HRN) {
      if (first) { g_bb[hn] = acc; } else { g_bb[hn] += acc; }
    } else {
      if (first) { g_cb[hn] = acc; } else { g_cb[hn] += acc; }
    }
    return;
  }
  if (e < 2u * H + 2u * HRN) {
    let h = e - H - 2u * HRN;
    var acc = 0.0;
    for (var b = b0; b < b1; b++) { acc += work[p.o_dDp + b * H + h]; }
    if (first) { g_D[h] = acc; } else { g_D[h] += acc; }
    return;
  }
  let j = e - 2u * H - 2u * HRN;   // dmimo_x [H, R, P]: sum over b of the (b, h) partials
  let RP = p.R * p.P;
  let h = j / RP;
  var acc = 0.0;
  for (var b = b0; b < b1; b++) { acc += work[p.o_dmx + (b * H + h) * RP + j % RP]; }
  if (first) { g_mx[j] = acc; } else { g_mx[j] += acc; }
}
