// Mamba-2 SSD scan, backward (transformers' Mamba2 torch path; the forward is shaders/ssd_forward.wgsl).
//
//   dt_t = clamp(softplus(dt_raw_t + dt_bias), dt_min, dt_max)  (threshold 20)       [Bsz, T, H]
//   A    = -exp(A_log)   (a scalar per head)                                          [H]
//   h_t[h,p,n] = exp(dt_t[h] A[h]) h_{t-1}[h,p,n] + dt_t[h] B_t[g,n] x_t[h,p]        g = h / (H/G)
//   y_t[h,p]   = sum_n C_t[g,n] h_t[h,p,n] + D[h] x_t[h,p]
//
// Layout: token rows r = b*T + t. dy, x [.., H*P], dt_raw [.., H], B, C [.., G*N] and the
// per-token gradients dx, ddt, dB, dC are "views": element (r, j) at off + r*stride + j, so x/B/C
// are read straight out of the conv output [x | B | C] and dx/dB/dC written into its gradient.
// hc [Bsz, nc, H, P, N]: the state before the first token of each chunk of L tokens (what the
// forward keeps). dh_last, dh0 [Bsz, H, P, N].
//
// Chunked ("state passing") form. Inside chunk c = [t0, t1), with l_k = dt_k A (log decay):
//   seg(t, s) = sum_{k=s+1..t} l_k (s <= t)   summed term by term: the stable segment-sum
//   DS_t = exp(sum_{k=t0..t} l_k)  (chunk start -> t),   DE_t = exp(sum_{k=t+1..t1-1} l_k)
//   h_t  = DS_t hstart + sum_{s<=t} exp(seg(t,s)) dt_s x_s (x) B_s
// Adjoint: R_c = dL/dh_{t1-1} minus y_{t1-1}'s own part (R_{nc-1} = dh_last); then inside c
//   g_t  = sum_{s>=t} exp(seg(s,t)) dy_s (x) C_s + DE_t R_c
//   R_{c-1} = TOT_c R_c + GL_c,   GL_c = sum_{s in c} DS_s dy_s (x) C_s,  TOT_c = exp(sum_c l);
//   dh0 = TOT_0 R_0 + GL_0.
// With CB[t,s] = C_t.B_s and M[t,s] = dy_t.x_s (same head, s <= t), DCB = exp(seg) CB and
// DM = exp(seg) M, every gradient is a short loop over the chunk plus one over P or N:
//   q_t[p]  = sum_n g_t[p,n] B_t[n] = sum_{s>=t} DCB[s,t] dy_s[p] + DE_t (R_c[p,:] . B_t)
//   dx_t    = D dy_t + dt_t q_t
//   dC_t[n] = sum_{h in g} DS_t sum_p dy_t[p] hstart[p,n] + sum_{s<=t} DM[t,s] dt_s B_s[n]
//   dB_t[n] = sum_{h in g} dt_t (sum_{s>=t} DM[s,t] C_s[n] + DE_t sum_p R_c[p,n] x_t[p])
// The decay gradient dL/dl_t = <g_t, exp(l_t) h_{t-1}> is summed from the paths that cross
// step t, each term a genuine contribution:
//   dL/dl_t = TOT_c <R_c, hstart>                       (chunk start -> chunk end)
//           + sum_{s>=t} DS_s dy_s . (hstart C_s)       (chunk start -> output s)
//           + sum_{r<t} DE_r dt_r x_r . (R_c B_r)       (input r -> chunk end)
//           + sum_{s>=t} sum_{r<t} Z[s,r],  Z[s,r] = exp(seg(s,r)) dt_r M[s,r] CB[s,r]
// (the usual telescoped form, a reverse cumsum of dy.y' - dt x.q, subtracts two large equal
// parts when exp(l_t) ~ 0 and lost ~1e-4 of dA_log in f32; this one does not).
//   ddt_t   = A dL/dl_t + x_t . q_t;  ddt_raw = ddt_t softplus'(v) [dt_min <= softplus(v) <= dt_max]
//   dA_log  = A sum dt_t dL/dl_t;  dD = sum dy.x (= DM[t,t]);  d dt_bias = sum ddt_raw
//
// Entry points, one thread per output element, serial loops inside (no barriers, no workgroup
// memory, no atomics; every reduction is a fixed-order loop: bit-identical reruns):
//   S0 ssd_backward_prep    per (b,h,c): dt, softplus'·mask, l, DS, DE, TOT           O(L)
//   S1 ssd_backward_mats    per (b,h,t,j), s = t0+j <= t: DM, DCB, Z [t, j]       O(L+P+N)
//   S2 ssd_backward_gloc    per (b,c,h,p,n): GL_c                                     O(L)
//   S3 ssd_backward_carry   per (b,h,p), serial backwards over chunks, loop over n: R_c,
//                           sum_n R_c hstart_c; dh0                                O(nc N)
//   S4 ssd_backward_dx      per (b,t,h,p): q, dx; per-p products for S7 into work   O(L+N)
//   S5 ssd_backward_dc      per (b,t,g,n): dC                                 O(H/G (L+P))
//   S6 ssd_backward_db      per (b,t,g,n): dB (its own dispatch: dB and dC are usually windows
//                           of one gradient buffer, and two overlapping writable bindings
//                           in one dispatch are a WebGPU validation error)    O(H/G (L+P))
//   S7 ssd_backward_rows    per (b,h,t): the sums over p of S4's products; Z row prefix sums
//                                                                                  O(P+L)
//   S8 ssd_backward_ddt     per (b,h,t): dL/dl, ddt_raw; per-token dA, dD, d dt_bias terms
//                                                                                  O(P+L)
//   S9 ssd_backward_params  per h: fixed-order sums over (b, t); ACCUMULATE adds   O(Bsz T)
// Work memory (floats): 3*Bsz*H*nc*L(L+1)/2 (the packed L x L triangles) + Bsz*H*T*11
//   + 3*Bsz*T*H*P + Bsz*(nc+1)*H*P*N (GL_c, overwritten in place by R_c) + Bsz*H*nc*(P + 1).

const HAS_D = 1u;
const HAS_BIAS = 2u;     // dt_bias given
const HAS_DH = 4u;       // dh_last given
const WRITE_DH0 = 8u;
const ACCUMULATE = 16u;  // dA_log, dD, ddt_bias +=
const HAS_DTMAX = 32u;   // clamp dt from above (dt_min always applies)
const HAS_INIT = 64u;    // hc given (else: nc = 1 and a zero initial state)

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, L: u32, nc: u32, nb: u32,
  flags: u32, dt_min: f32, dt_max: f32, _p0: u32,
  dy_off: u32, dy_str: u32, x_off: u32, x_str: u32,   // dy, x      [Bsz*T, *] views, width H*P
  dt_off: u32, dt_str: u32, b_off: u32, b_str: u32,   // dt_raw (H), B (G*N)
  c_off: u32, c_str: u32, dx_off: u32, dx_str: u32,   // C (G*N), dx (H*P)
  dd_off: u32, dd_str: u32, db_off: u32, db_str: u32, // ddt (H), dB (G*N)
  dc_off: u32, dc_str: u32, s9_t0: u32, s9_tn: u32,   // dC (G*N); S9's token window
  w_dt: u32, w_sig: u32, w_l: u32, w_ds: u32,         // work regions (element offsets)
  w_de: u32, w_tot: u32, w_dm: u32, w_dcb: u32,
  w_z: u32, w_gr: u32, w_ep: u32, w_w1: u32,
  w_w2: u32, w_w3: u32, w_ys: u32, w_rn: u32,
  w_s2: u32, w_pa: u32, w_pd: u32, w_pb: u32,
  c_hi: u32, c_lo: u32, _p5: u32, _p6: u32,          // S3's chunk window (c_lo, c_hi]
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;          // view [Bsz*T, H*P]
@group(0) @binding(2) var<storage, read> xs: array<f32>;          // view [Bsz*T, H*P]
@group(0) @binding(3) var<storage, read> dt_raw: array<f32>;      // view [Bsz*T, H]
@group(0) @binding(4) var<storage, read> dt_bias: array<f32>;     // [H]
@group(0) @binding(5) var<storage, read> A_log: array<f32>;       // [H]
@group(0) @binding(6) var<storage, read> Bm: array<f32>;          // view [Bsz*T, G*N]
@group(0) @binding(7) var<storage, read> Cm: array<f32>;          // view [Bsz*T, G*N]
@group(0) @binding(8) var<storage, read> Dv: array<f32>;          // [H]
@group(0) @binding(9) var<storage, read> hc: array<f32>;          // [Bsz, nc, H, P, N]
@group(0) @binding(10) var<storage, read> dh_last: array<f32>;    // [Bsz, H, P, N]
@group(0) @binding(11) var<storage, read_write> work: array<f32>; // regions w_* (see header)
@group(0) @binding(12) var<storage, read_write> dx: array<f32>;   // view [Bsz*T, H*P]
@group(0) @binding(13) var<storage, read_write> ddt: array<f32>;  // view [Bsz*T, H]
@group(0) @binding(14) var<storage, read_write> dB: array<f32>;   // view [Bsz*T, G*N]
@group(0) @binding(15) var<storage, read_write> dC: array<f32>;   // view [Bsz*T, G*N]
@group(0) @binding(16) var<storage, read_write> dA_log: array<f32>;   // [H]
@group(0) @binding(17) var<storage, read_write> dD: array<f32>;       // [H]
@group(0) @binding(18) var<storage, read_write> ddt_bias: array<f32>; // [H]
@group(0) @binding(19) var<storage, read_write> dh0: array<f32>;      // [Bsz, H, P, N]

// softplus (threshold 20, exact log1p) and sigmoid, shared with the other kernels:
//#include "lib/activations.wgsl"

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }



// Flattened 1-D thread index of a (fold()ed) grid of 64-wide workgroups.
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 64u; }

// Per-(b, h, token) work index; per-(b, h, chunk) index; chunk bounds.
fn tq(b: u32, h: u32, t: u32) -> u32 { return (b * p.H + h) * p.T + t; }
fn cq(b: u32, h: u32, c: u32) -> u32 { return (b * p.H + h) * p.nc + c; }
fn chunk_end(c: u32) -> u32 { return min(c * p.L + p.L, p.T); }
// Element (p, n) of head h's state in chunk c of a [Bsz, nc, H, P, N] array.
fn sidx(b: u32, c: u32, h: u32, pp: u32, n: u32) -> u32 {
  return (((b * p.nc + c) * p.H + h) * p.P + pp) * p.N + n;
}
// Element (p, n) of slot `slot` in the GL/R region [Bsz, nc + 1, H, P, N]: GL_c sits in slot c
// until the carry has used it, then R_{c-1} replaces it (R_c in slot c + 1; GL_0 stays for dh0).
fn gidx(b: u32, slot: u32, h: u32, pp: u32, n: u32) -> u32 {
  return (((b * (p.nc + 1u) + slot) * p.H + h) * p.P + pp) * p.N + n;
}
// Entry (t, s = t0 + j), j <= t - t0, of a chunk's lower-triangular L x L matrix (DM, DCB, Z),
// packed: chunk blocks of L (L + 1) / 2, row i = t - t0 starting at i (i + 1) / 2.
fn mi(b: u32, h: u32, t: u32, j: u32) -> u32 {
  let c = t / p.L;
  let i = t - c * p.L;
  return ((b * p.H + h) * p.nc + c) * (p.L * (p.L + 1u) / 2u) + i * (i + 1u) / 2u + j;
}
fn hstart(b: u32, c: u32, h: u32, pp: u32, n: u32) -> f32 {
  if (has(HAS_INIT)) { return hc[sidx(b, c, h, pp, n)]; }
  return 0.0;
}

// Activation reads: token row r = b*T + t.
fn dy_at(r: u32, h: u32, pp: u32) -> f32 { return dy[p.dy_off + r * p.dy_str + h * p.P + pp]; }
fn x_at(r: u32, h: u32, pp: u32) -> f32 { return xs[p.x_off + r * p.x_str + h * p.P + pp]; }
fn b_at(r: u32, g: u32, n: u32) -> f32 { return Bm[p.b_off + r * p.b_str + g * p.N + n]; }
fn c_at(r: u32, g: u32, n: u32) -> f32 { return Cm[p.c_off + r * p.c_str + g * p.N + n]; }
fn group_of(h: u32) -> u32 { return h / (p.H / p.G); }

// ------------------------------------------------------------------------------------------
// S0: per (b, h, c): dt, dt'(raw) (softplus' times the clamp mask), l = dt A, DS, DE, TOT.
@compute @workgroup_size(64)
fn ssd_backward_prep(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.H * p.nc) { return; }
  let c = k % p.nc;
  let h = (k / p.nc) % p.H;
  let b = k / (p.nc * p.H);
  let A = -exp(A_log[h]);
  let t0 = c * p.L;
  let t1 = chunk_end(c);
  var acc = 0.0;
  for (var t = t0; t < t1; t++) {
    var v = dt_raw[p.dt_off + (b * p.T + t) * p.dt_str + h];
    if (has(HAS_BIAS)) { v += dt_bias[h]; }
    let sp = softplus(v);
    var dt = max(sp, p.dt_min);
    var ok = sp >= p.dt_min;          // torch.clamp: the gradient passes where min <= v <= max
    if (has(HAS_DTMAX)) {
      dt = min(dt, p.dt_max);
      ok = ok && sp <= p.dt_max;
    }
    let q = tq(b, h, t);
    work[p.w_dt + q] = dt;
    work[p.w_sig + q] = select(0.0, select(sigmoid(v), 1.0, v > 20.0), ok);
    let l = dt * A;
    work[p.w_l + q] = l;
    acc += l;
    work[p.w_ds + q] = exp(acc);
  }
  work[p.w_tot + k] = exp(acc);
  var rev = 0.0;                      // sum_{k > t} l_k, summed directly (no cumsum difference)
  for (var t = t1; t > t0; t--) {
    let q = tq(b, h, t - 1u);
    work[p.w_de + q] = exp(rev);
    rev += work[p.w_l + q];
  }
}

// S1: per (b, h, t, j), s = t0 + j <= t: DM[t, j] = exp(seg(t,s)) dy_t.x_s, DCB = exp(seg) C_t.B_s,
// and the path term Z = exp(seg) dt_s (dy_t.x_s)(C_t.B_s) for s < t (0 on the diagonal). Packed
// lower triangles (mi); threads with s > t idle.
@compute @workgroup_size(64)
fn ssd_backward_mats(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.H * p.T * p.L) { return; }
  let j = k % p.L;
  let t = (k / p.L) % p.T;
  let h = (k / (p.L * p.T)) % p.H;
  let b = k / (p.L * p.T * p.H);
  let t0 = (t / p.L) * p.L;
  let s = t0 + j;
  var dm = 0.0;
  var dcb = 0.0;
  var z = 0.0;
  if (s <= t) {
    var seg = 0.0;
    for (var u = s + 1u; u <= t; u++) { seg += work[p.w_l + tq(b, h, u)]; }
    let e = exp(seg);
    let rt = b * p.T + t;
    let rs = b * p.T + s;
    var m = 0.0;
    for (var pp = 0u; pp < p.P; pp++) { m += dy_at(rt, h, pp) * x_at(rs, h, pp); }
    let g = group_of(h);
    var cb = 0.0;
    for (var n = 0u; n < p.N; n++) { cb += c_at(rt, g, n) * b_at(rs, g, n); }
    dm = e * m;
    dcb = e * cb;
    if (s < t) { z = dcb * m * work[p.w_dt + tq(b, h, s)]; }
    let o = mi(b, h, t, j);
    work[p.w_dm + o] = dm;
    work[p.w_dcb + o] = dcb;
    work[p.w_z + o] = z;
  }
}

// S2: per (b, c, h, p, n): GL_c = sum_s DS_s dy_s[p] C_s[n].
@compute @workgroup_size(64)
fn ssd_backward_gloc(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.nc * p.H * p.P * p.N) { return; }
  let n = k % p.N;
  let pp = (k / p.N) % p.P;
  let h = (k / (p.N * p.P)) % p.H;
  let c = (k / (p.N * p.P * p.H)) % p.nc;
  let b = k / (p.N * p.P * p.H * p.nc);
  let g = group_of(h);
  let t0 = c * p.L;
  let t1 = chunk_end(c);
  var gl = 0.0;
  for (var s = t0; s < t1; s++) {
    let r = b * p.T + s;
    gl += work[p.w_ds + tq(b, h, s)] * dy_at(r, h, pp) * c_at(r, g, n);
  }
  work[p.w_gr + gidx(b, c, h, pp, n)] = gl;
}

// S3: per (b, h, p), serial backwards over chunks, a loop over n (N states are not kept in
// registers): R_c over GL_{c+1} (slot c + 1), sum_n R_c[p,n] hstart_c[p,n] into w_ep, dh0.
@compute @workgroup_size(64)
fn ssd_backward_carry(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.H * p.P) { return; }
  let pp = k % p.P;
  let h = (k / p.P) % p.H;
  let b = k / (p.P * p.H);
  let row = ((b * p.H + h) * p.P + pp) * p.N;    // row of dh_last / dh0
  // chunks c_hi .. c_lo + 1 (all: nc .. 1); R_{c+1} is read back from work, so windows
  // (the loop-pass budget, py_engine/ops/loop_budget.py) run one after another, top down
  for (var c = p.c_hi; c > p.c_lo; c--) {
    let cc = c - 1u;
    var e = 0.0;
    var tot = 0.0;
    if (cc + 1u < p.nc) { tot = work[p.w_tot + cq(b, h, cc + 1u)]; }
    for (var n = 0u; n < p.N; n++) {
      var R = 0.0;
      let slot = gidx(b, cc + 1u, h, pp, n);       // holds GL_{cc+1}; R_cc goes there
      if (cc + 1u < p.nc) {
        R = tot * work[p.w_gr + gidx(b, cc + 2u, h, pp, n)] + work[p.w_gr + slot];
      } else if (has(HAS_DH)) {
        R = dh_last[row + n];
      }
      work[p.w_gr + slot] = R;
      e += R * hstart(b, cc, h, pp, n);
    }
    work[p.w_ep + cq(b, h, cc) * p.P + pp] = e;
  }
  if (has(WRITE_DH0) && p.c_lo == 0u) {
    let tot = work[p.w_tot + cq(b, h, 0u)];
    for (var n = 0u; n < p.N; n++) {
      dh0[row + n] = tot * work[p.w_gr + gidx(b, 1u, h, pp, n)] + work[p.w_gr + gidx(b, 0u, h, pp, n)];
    }
  }
}

// S4: per (b, t, h, p): q_t[p] and dx; dy (C.hstart), x (R.B) and x q into w_w1, w_w2, w_w3
// (summed over p by S7).
@compute @workgroup_size(64)
fn ssd_backward_dx(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.T * p.H * p.P) { return; }
  let pp = k % p.P;
  let h = (k / p.P) % p.H;
  let t = (k / (p.P * p.H)) % p.T;
  let b = k / (p.P * p.H * p.T);
  let g = group_of(h);
  let c = t / p.L;
  let t0 = c * p.L;
  let t1 = chunk_end(c);
  let r = b * p.T + t;
  let q = tq(b, h, t);
  var ch = 0.0;
  var rb = 0.0;
  for (var n = 0u; n < p.N; n++) {
    ch += c_at(r, g, n) * hstart(b, c, h, pp, n);
    rb += work[p.w_gr + gidx(b, c + 1u, h, pp, n)] * b_at(r, g, n);
  }
  var qv = work[p.w_de + q] * rb;
  for (var s = t; s < t1; s++) {
    qv += work[p.w_dcb + mi(b, h, s, t - t0)] * dy_at(b * p.T + s, h, pp);
  }
  let g0 = dy_at(r, h, pp);
  let xv = x_at(r, h, pp);
  var dd = 0.0;
  if (has(HAS_D)) { dd = Dv[h]; }
  dx[p.dx_off + r * p.dx_str + h * p.P + pp] = dd * g0 + work[p.w_dt + q] * qv;
  work[p.w_w1 + k] = g0 * ch;
  work[p.w_w2 + k] = xv * rb;
  work[p.w_w3 + k] = xv * qv;
}

// S5: per (b, t, g, n): dC, summed over the heads of group g in order. dB and dC are separate
// dispatches because they are usually column windows of one gradient buffer, and WebGPU
// rejects two writable bindings of overlapping ranges in one dispatch.
@compute @workgroup_size(64)
fn ssd_backward_dc(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.T * p.G * p.N) { return; }
  let n = k % p.N;
  let g = (k / p.N) % p.G;
  let t = (k / (p.N * p.G)) % p.T;
  let b = k / (p.N * p.G * p.T);
  let c = t / p.L;
  let t0 = c * p.L;
  let r = b * p.T + t;
  let hg = p.H / p.G;
  var gc = 0.0;
  for (var h = g * hg; h < g * hg + hg; h++) {
    let q = tq(b, h, t);
    var sh = 0.0;
    for (var pp = 0u; pp < p.P; pp++) { sh += dy_at(r, h, pp) * hstart(b, c, h, pp, n); }
    var vc = work[p.w_ds + q] * sh;
    for (var s = t0; s <= t; s++) {
      vc += work[p.w_dm + mi(b, h, t, s - t0)] * work[p.w_dt + tq(b, h, s)] * b_at(b * p.T + s, g, n);
    }
    gc += vc;
  }
  dC[p.dc_off + r * p.dc_str + g * p.N + n] = gc;
}

// S6: per (b, t, g, n): dB, summed over the heads of group g in order.
@compute @workgroup_size(64)
fn ssd_backward_db(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.T * p.G * p.N) { return; }
  let n = k % p.N;
  let g = (k / p.N) % p.G;
  let t = (k / (p.N * p.G)) % p.T;
  let b = k / (p.N * p.G * p.T);
  let c = t / p.L;
  let t0 = c * p.L;
  let t1 = chunk_end(c);
  let r = b * p.T + t;
  let hg = p.H / p.G;
  var gb = 0.0;
  for (var h = g * hg; h < g * hg + hg; h++) {
    let q = tq(b, h, t);
    var sr = 0.0;
    for (var pp = 0u; pp < p.P; pp++) {
      sr += work[p.w_gr + gidx(b, c + 1u, h, pp, n)] * x_at(r, h, pp);
    }
    var vb = work[p.w_de + q] * sr;
    for (var s = t; s < t1; s++) {
      vb += work[p.w_dm + mi(b, h, s, t - t0)] * c_at(b * p.T + s, g, n);
    }
    gb += work[p.w_dt + q] * vb;
  }
  dB[p.db_off + r * p.db_str + g * p.N + n] = gb;
}

// S7: per (b, h, t): Y_t = DS_t sum_p dy (C.hstart), Rn_t = DE_t dt_t sum_p x (R.B),
// S2_t = x_t . q_t; and row t of Z turned into exclusive prefix sums (in place):
// Z[t, j] <- sum_{j' < j} Z[t, j'].
@compute @workgroup_size(64)
fn ssd_backward_rows(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.H * p.T) { return; }
  let t = k % p.T;
  let h = (k / p.T) % p.H;
  let b = k / (p.T * p.H);
  let base = ((b * p.T + t) * p.H + h) * p.P;
  var s1 = 0.0;
  var s2 = 0.0;
  var s3 = 0.0;
  for (var pp = 0u; pp < p.P; pp++) {
    s1 += work[p.w_w1 + base + pp];
    s2 += work[p.w_w2 + base + pp];
    s3 += work[p.w_w3 + base + pp];
  }
  work[p.w_ys + k] = work[p.w_ds + k] * s1;
  work[p.w_rn + k] = work[p.w_de + k] * work[p.w_dt + k] * s2;
  work[p.w_s2 + k] = s3;
  let n = t - (t / p.L) * p.L;                     // Z row t has entries j < t - t0
  var run = 0.0;
  for (var j = 0u; j <= n; j++) {
    let i = p.w_z + mi(b, h, t, j);
    let v = work[i];
    work[i] = run;
    run += v;
  }
}

// S8: per (b, h, t): dL/dl_t (header), ddt_raw; per-token terms of dA, dD, d dt_bias.
@compute @workgroup_size(64)
fn ssd_backward_ddt(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat(gid, nwg);
  if (k >= p.nb * p.H * p.T) { return; }
  let t = k % p.T;
  let h = (k / p.T) % p.H;
  let b = k / (p.T * p.H);
  let A = -exp(A_log[h]);
  let c = t / p.L;
  let t0 = c * p.L;
  let t1 = chunk_end(c);
  let kc = cq(b, h, c);
  var e = 0.0;
  for (var pp = 0u; pp < p.P; pp++) { e += work[p.w_ep + kc * p.P + pp]; }
  var dl = work[p.w_tot + kc] * e;
  for (var s = t; s < t1; s++) {
    let qs = tq(b, h, s);
    dl += work[p.w_ys + qs] + work[p.w_z + mi(b, h, s, t - t0)];
  }
  for (var s = t0; s < t; s++) { dl += work[p.w_rn + tq(b, h, s)]; }
  let dt = work[p.w_dt + k];
  let dr = (A * dl + work[p.w_s2 + k]) * work[p.w_sig + k];
  ddt[p.dd_off + (b * p.T + t) * p.dd_str + h] = dr;
  work[p.w_pa + k] = dt * dl;
  work[p.w_pd + k] = work[p.w_dm + mi(b, h, t, t - t0)];   // dy_t . x_t (decay 1 on the diagonal)
  work[p.w_pb + k] = dr;
}

// S9: per h: dA_log = A sum dt dL/dl, dD, d dt_bias; fixed order over (b, t).
@compute @workgroup_size(64)
fn ssd_backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
  let h = gid.x;
  if (h >= p.H) { return; }
  var sa = 0.0;
  var sd = 0.0;
  var sb = 0.0;
  for (var b = 0u; b < p.nb; b++) {
    for (var t = p.s9_t0; t < p.s9_t0 + p.s9_tn; t++) {   // a token window (all: 0 .. T)
      let q = tq(b, h, t);
      sa += work[p.w_pa + q];
      sd += work[p.w_pd + q];
      sb += work[p.w_pb + q];
    }
  }
  let acc = has(ACCUMULATE);
  var va = -exp(A_log[h]) * sa;                    // dA_log = dA * dA/dA_log = dA * A
  if (acc) { va += dA_log[h]; }
  dA_log[h] = va;
  if (has(HAS_D)) {
    if (acc) { sd += dD[h]; }
    dD[h] = sd;
  }
  if (has(HAS_BIAS)) {
    if (acc) { sb += ddt_bias[h]; }
    ddt_bias[h] = sb;
  }
}
