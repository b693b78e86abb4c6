// Mamba-3 scan (SISO; MIMO of rank R with flag MIMO), sequence forward (state-spaces Mamba3 / mamba3_siso_fwd_ref; float64 reference
// tests/reference/mamba3_numpy.py scan_sequential). The one-token step is shaders/mamba3_step.wgsl
// (kernels in lib/mamba3_step_common.wgsl), which reuses mamba3_prep below, or, where 15 storage
// bindings allow, shaders/mamba3_step_folded.wgsl, which computes the same prep values itself.
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
// MIMO (flag MIMO, rank R = p.R; SISO is R = 1): Bn/Cn rows are (r g n), R*G*N wide; B_bias/C_bias
// [H, R, N]; mimo_x [H, R, P] packed after D in pre; v_r = x * mimo_x[h, r]; k_r, q_r rotated in
// pairs (i, i + N/2), i < S; S_h = alpha S_h + beta sum_r v_prev_r k_prev_r^T + gamma sum_r v_r k_r^T;
// y_r = S_h q_r + D[h] v_r written rank-major per row (y row = [R][H*P]); k state [Bsz, R, H, N].
//
// Two dispatches (the inputs, parameters and four states need 16 storage bindings, more than the
// 10 a browser gives, so the per-token scalars are precomputed and the parameters packed):
//   mamba3_prep  one thread per element of pre (fold grid): pre [Bsz*T, 4H + S] rows
//                [DT (H) | alpha (H) | beta (H) | gamma (H) | theta (S)], then at element `par`
//                the packed parameters [B_bias (H*R*N) | C_bias (H*R*N) | D (H)] (then mimo_x
//                [H*R*P], copied there by the host).
//   mamba3_scan  one workgroup of WG threads per (h, b), grid (H, Bsz), sequential in t. Per token
//                the workgroup updates phi (threads over i < S), rotates k and q into workgroup
//                memory (threads over n), then each thread owns state rows p (p = lid, lid + WG ..)
//                and loops over n: S, y. Barriers only between these phases; no atomics, fixed
//                order: deterministic. The state ssm lives in its (in place) storage buffer: one
//                read and one write per element per token (N*P up to 8192 floats does not fit in
//                the 16 KiB of workgroup memory). v_prev is x of the previous row (or the v state).
//   or mamba3_chunk_scan (the chunked form, SISO and MIMO, below), picked by the host by length.
// Workgroup memory (WS = 3RN + S floats, host-set): k double buffer [2][R][N] (slot t % 2 = k_t,
// the other slot k_{t-1}) | q [R][N] | phi [S].
// Token windows: both scans walk only tokens [t0, t0 + tn) (the chunked one: whole chunks, t0 a
// multiple of the chunk) and leave all four states in their buffers at the window's end; a window
// after the first (t0 > 0) starts from those states, as HAS_INIT does. The host splits a sequence
// into windows small enough for lavapipe (Mesa llvmpipe), which silently ends every loop of an
// invocation once the invocation's loops together have made 65535 passes
// (LP_MAX_TGSI_LOOP_ITERATIONS, one counter shared by all loops): one dispatch over a long
// sequence came out wrong from token ~99 (N = 128) on. See ops/mamba3_windows.py.
// Layout: x [.., H*P], Bn/Cn [.., G*N], dd_dt/dd_A/trap [.., H], angles [.., S] and y [.., H*P] are
// views (element (r, j) at off + r*str + j): Cols windows of in_proj's output. States: angle
// [Bsz, H, S], ssm [Bsz, H, P, N], k [Bsz, R, H, N], v [Bsz, H, P], read when HAS_INIT (else zeros)
// and overwritten with the final state.

const HAS_INIT = 1u;
// MIMO, MAX_R, WG, TWO_PI, WS and Params:
//#include "lib/mamba3_params.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dd_dt: array<f32>;     // [Bsz*T, *] view, H wide
@group(0) @binding(2) var<storage, read> dd_A: array<f32>;      // [Bsz*T, *] view, H wide
@group(0) @binding(3) var<storage, read> trap: array<f32>;      // [Bsz*T, *] view, H wide
@group(0) @binding(4) var<storage, read> angles: array<f32>;    // [Bsz*T, *] view, S wide
@group(0) @binding(5) var<storage, read> dt_bias: array<f32>;   // [H]
@group(0) @binding(6) var<storage, read> B_bias: array<f32>;    // [H, R, N]
@group(0) @binding(7) var<storage, read> C_bias: array<f32>;    // [H, R, N]
@group(0) @binding(8) var<storage, read> Dv: array<f32>;        // [H]
@group(0) @binding(9) var<storage, read_write> pre: array<f32>; // [Bsz*T, 4H+S] | B_bias | C_bias | D
@group(0) @binding(10) var<storage, read> x: array<f32>;        // [Bsz*T, *] view, H*P wide
@group(0) @binding(11) var<storage, read> Bn: array<f32>;       // [Bsz*T, *] view, R*G*N wide (normed)
@group(0) @binding(12) var<storage, read> Cn: array<f32>;       // [Bsz*T, *] view, R*G*N wide (normed)
@group(0) @binding(13) var<storage, read_write> y: array<f32>;  // [Bsz*T, *] view, R*H*P wide
@group(0) @binding(14) var<storage, read_write> s_ang: array<f32>; // [Bsz, H, S], in place
@group(0) @binding(15) var<storage, read_write> s_ssm: array<f32>; // [Bsz, H, P, N], in place
@group(0) @binding(16) var<storage, read_write> s_k: array<f32>;   // [Bsz, R, H, N], in place
@group(0) @binding(17) var<storage, read_write> s_v: array<f32>;   // [Bsz, H, P], in place

var<workgroup> sh: array<f32, WS>;

// (softplus, sigmoid, HEAVY, PI: lib/mamba3_prep.wgsl, below; sin_cos, has, the rotation:
// lib/mamba3_params.wgsl, above)



// The raw in_proj values prep_value reads (lib/mamba3_prep.wgsl): this kernel's four views.
fn dt_bias_at(h: u32) -> f32 { return dt_bias[h]; }
fn raw_dt(r: u32, h: u32) -> f32 { return dd_dt[p.dt_off + r * p.dt_str + h]; }
fn raw_da(r: u32, h: u32) -> f32 { return dd_A[p.da_off + r * p.da_str + h]; }
fn raw_trap(r: u32, h: u32) -> f32 { return trap[p.tr_off + r * p.tr_str + h]; }
fn raw_angle(r: u32, i: u32) -> f32 { return angles[p.an_off + r * p.an_str + i]; }

// prep_value(r, j): element j of row r of pre (see the header)
//#include "lib/mamba3_prep.wgsl"

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
  let HN = p.H * p.R * p.N;
  if (e < HN) { pre[k] = B_bias[e]; } else if (e < 2u * HN) { pre[k] = C_bias[e - HN]; }
  else { pre[k] = Dv[e - 2u * HN]; }
}

// kq_rotated(row, h, g, rk, n, phb): lib/mamba3_chunk_common.wgsl (included below)

// k_r (into sh[ko + r*N + n]) and q_r (into sh[2RN + r*N + n]) of token row r for e = r*N + n over
// lid, lid + WG ..; the angles at sh[3RN ..].
fn rotate_kq(row: u32, h: u32, g: u32, ko: u32, lid: u32) {
  let RN = p.R * p.N;
  for (var e = lid; e < RN; e += WG) {
    let kq = kq_rotated(row, h, g, e / p.N, e % p.N, 3u * RN);
    sh[ko + e] = kq.x;
    sh[2u * RN + e] = kq.y;
  }
}

// mx(h, r, pp), the MIMO up-projection weight: lib/mamba3_chunk_common.wgsl

@compute @workgroup_size(WG)
fn mamba3_scan(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let R = p.R;
  let RN = R * N;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let init = has(HAS_INIT);
  let t1 = p.t0 + p.tn;
  let carried = init || p.t0 > 0u;   // the states hold token t0 - 1's (or the initial) values
  // phi and k_{t0-1} (the slot token t0 reads as k_prev) from the state, or zeros
  for (var i = lid; i < S; i += WG) {
    var v = 0.0;
    if (carried) { v = s_ang[bh * S + i]; }
    sh[3u * RN + i] = v;
  }
  let kslot = ((p.t0 + 1u) & 1u) * RN;
  for (var e = lid; e < RN; e += WG) {
    var v = 0.0;
    if (carried) { v = s_k[k_index(b, h, e)]; }
    sh[kslot + e] = v;
  }
  let Dh = pre[p.par + 2u * p.H * RN + h];
  workgroupBarrier();
  for (var t = p.t0; t < t1; t++) {
    let r = b * p.T + t;
    let row = r * p.pw;
    let dt = pre[row + h];
    let alpha = pre[row + p.H + h];
    let beta = pre[row + 2u * p.H + h];
    let gamma = pre[row + 3u * p.H + h];
    let cur = (t & 1u) * RN;
    let prv = RN - cur;
    for (var i = lid; i < S; i += WG) {   // each thread owns its angles
      let ph = sh[3u * RN + i] + pre[row + 4u * p.H + i] * dt;
      sh[3u * RN + i] = wrap_angle(ph);
    }
    workgroupBarrier();
    rotate_kq(r, h, g, cur, lid);
    workgroupBarrier();
    for (var pp = lid; pp < P; pp += WG) {
      let v = x[p.x_off + r * p.x_str + h * P + pp];
      var vp = 0.0;
      if (t > 0u) { vp = x[p.x_off + (r - 1u) * p.x_str + h * P + pp]; }
      else if (init) { vp = s_v[bh * P + pp]; }
      var bv: array<f32, MAX_R>;   // beta v_prev_r, gamma v_r, y_r accumulators
      var gv: array<f32, MAX_R>;
      var acc: array<f32, MAX_R>;
      for (var k = 0u; k < R; k++) {
        let w = mx(h, k, pp);
        bv[k] = beta * vp * w;
        gv[k] = gamma * v * w;
        acc[k] = 0.0;
      }
      let base = (bh * P + pp) * N;
      let fresh = t == 0u && !init;
      for (var n = 0u; n < N; n++) {
        var s = 0.0;
        if (!fresh) { s = alpha * s_ssm[base + n]; }
        for (var k = 0u; k < R; k++) {
          s += bv[k] * sh[prv + k * N + n] + gv[k] * sh[cur + k * N + n];
        }
        s_ssm[base + n] = s;
        for (var k = 0u; k < R; k++) { acc[k] += s * sh[2u * RN + k * N + n]; }
      }
      for (var k = 0u; k < R; k++) {
        y[p.y_off + r * p.y_str + (k * p.H + h) * P + pp] = acc[k] + Dh * v * mx(h, k, pp);
      }
    }
    workgroupBarrier();   // q, phi and the k slots are rewritten by the next token
  }
  // the window's final angle, k (its last token's slot) and v states, in place (each read only above)
  let last = ((t1 - 1u) & 1u) * RN;
  for (var i = lid; i < S; i += WG) { s_ang[bh * S + i] = sh[3u * RN + i]; }
  for (var e = lid; e < RN; e += WG) { s_k[k_index(b, h, e)] = sh[last + e]; }
  let rl = b * p.T + t1 - 1u;
  for (var pp = lid; pp < P; pp += WG) { s_v[bh * P + pp] = x[p.x_off + rl * p.x_str + h * P + pp]; }
}

// ---- the chunked form (SISO and MIMO; host-picked for long prompts: ops/mamba3.py), as
// mamba3_siso_fwd_ref / mamba3_MIMO_chunk_ref with a carried state. One workgroup per (h, b) walks
// chunks of L = CHUNK tokens (L <= MAX_L, L R <= MAX_LR); in a chunk (t, s < L; ranks r, u < R; SISO is
// R = 1 with mimo_x = 1; prod_{a..b} alpha = 1 when empty):
//   cp_t   = prod_{r <= t} alpha_r;   dec(t, s) = prod_{s < r <= t} alpha_r  (products, not exp of a
//            cumsum of logs: an alpha that underflows to 0 stays exact)
//   sc_s   = gamma_s + (DT - gamma)_{s+1} (the next token's trapezoid weight (1 - lam) DT, 0 at the
//            chunk end: it enters the next chunk's entry state instead);  sh_t = (DT - gamma)_{t+1}
//   M[(t,u),(s,r)] = (q_{t,u} . k_{s,r}) (dec(t, s) sc_s - [s == t] sh_t)   the intra-chunk "attention",
//            an (L R) x (L R) matrix: small matmuls over the ranks (the reference's kron(mask, 1_RxR))
//   acc    = S + (DT - gamma)_0 sum_r v_prev_r k_prev_r^T            (the state entering the chunk)
//   y_{t,u} = sum_{s <= t, r} M[(t,u),(s,r)] v_{s,r} + cp_t acc q_{t,u} + D v_{t,u}   (v_{s,r} = x_s mimo_x_r)
//   S'     = cp_{L-1} acc + sum_s dec(L-1, s) sc_s sum_r v_{s,r} k_{s,r}^T
// Phases per chunk (barriers between): phi of every token (threads over i < S); k_{t,r}, q_{t,r} rotated
// (threads over (t, r, n)); the per-token scalars (loaded side by side, formed by thread 0); M (threads over its entries); y and S'
// (threads over p, each streaming its state row once). Workgroup memory (host-set WS): k [L][R][N] |
// q [L][R][N] | M [L R][L R] | phi [L][S] | the 7 scalar rows [L] (lib/mamba3_chunk_common's
// ROW_*: cp, wl, dw (= dec(L-1, s) wl_s), shn, and the tokens' alpha, gamma, DT - gamma) |
// k_prev [R][N].

// The chunk tiles' layout and phases (2) to (4), shared with mamba3_chunked.wgsl:
const CWG = WG;
//#include "lib/mamba3_chunk_common.wgsl"

@compute @workgroup_size(WG)
fn mamba3_chunk_scan(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let R = RANK;
  let RN = R * N;
  let L = CHUNK;
  let LR = L * R;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let init = has(HAS_INIT);
  let Dh = pre[p.par + 2u * p.H * RN + h];
  let c_first = p.t0 / L;                       // the window [t0, t0 + tn): whole chunks
  let t_end = min(p.T, p.t0 + p.tn);
  let c_end = (t_end + L - 1u) / L;
  let carried = init || c_first > 0u;           // the states hold token t0 - 1's values
  for (var i = lid; i < S; i += WG) {
    var v = 0.0;
    if (carried) { v = s_ang[bh * S + i]; }
    sh[CPH() + (L - 1u) * S + i] = v;   // phi before the chunk: slot L-1 (where each chunk leaves it)
  }
  for (var e = lid; e < RN; e += WG) {
    var v = 0.0;
    if (carried) { v = s_k[k_index(b, h, e)]; }
    sh[CKP() + e] = v;
  }
  workgroupBarrier();
  for (var c = c_first; c < c_end; c++) {
    let t0 = c * L;
    let Lc = min(L, p.T - t0);
    let LcR = Lc * R;
    // (1) phi_t for t < Lc (threads own angles; slot L-1 carries phi from chunk to chunk)
    for (var i = lid; i < S; i += WG) {
      var ph = sh[CPH() + (L - 1u) * S + i];
      for (var t = 0u; t < Lc; t++) {
        let row = (b * p.T + t0 + t) * p.pw;
        ph = angle_step(ph, row, h, i);
        sh[CPH() + t * S + i] = ph;
      }
      if (Lc < L) { sh[CPH() + (L - 1u) * S + i] = ph; }   // the carried angle of a short last chunk
    }
    token_rows(b, h, t0, Lc, lid, CS());       // (3a)
    workgroupBarrier();
    chunk_rotate(b, h, g, t0, Lc, lid);        // (2)
    chunk_scalars(Lc, lid, CS());              // (3b)
    workgroupBarrier();
    chunk_m(Lc, lid);                          // (4)
    workgroupBarrier();
    // (5) threads over p: y of the chunk's tokens and ranks, and the state S' (row p streamed once)
    let r0 = b * p.T + t0;
    let c0 = dt_less_gamma(r0, h);
    for (var pp = lid; pp < P; pp += WG) {
      var xs: array<f32, MAX_L>;
      var ya: array<f32, MAX_LR>;
      var w: array<f32, MAX_R>;
      for (var k = 0u; k < R; k++) { w[k] = mx(h, k, pp); }
      for (var t = 0u; t < Lc; t++) { xs[t] = x[p.x_off + (r0 + t) * p.x_str + h * P + pp]; }
      for (var i = 0u; i < LcR; i++) { ya[i] = 0.0; }
      var vp = 0.0;
      if (c > 0u) { vp = x[p.x_off + (r0 - 1u) * p.x_str + h * P + pp]; }
      else if (init) { vp = s_v[bh * P + pp]; }
      let fresh = c == 0u && !init;
      let base = (bh * P + pp) * N;
      let cl = sh[ROW_CP(CS()) + Lc - 1u];
      for (var n = 0u; n < N; n++) {
        var kv = 0.0;                                  // sum_r mimo_x_r k_prev_r[n]
        for (var k = 0u; k < R; k++) { kv += w[k] * sh[CKP() + k * N + n]; }
        var a = c0 * vp * kv;
        if (!fresh) { a += s_ssm[base + n]; }
        var sn = cl * a;
        for (var t = 0u; t < Lc; t++) {
          var kt = 0.0;                                // sum_r mimo_x_r k_{t,r}[n]
          for (var k = 0u; k < R; k++) {
            ya[t * R + k] += a * sh[CQ() + (t * R + k) * N + n];
            kt += w[k] * sh[CK() + (t * R + k) * N + n];
          }
          sn += sh[ROW_DW(CS()) + t] * xs[t] * kt;
        }
        s_ssm[base + n] = sn;
      }
      for (var i = 0u; i < LcR; i++) {
        let t = i / R;
        var acc = sh[ROW_CP(CS()) + t] * ya[i] + Dh * xs[t] * w[i % R];
        for (var j = 0u; j < (t + 1u) * R; j++) { acc += sh[CM() + i * LR + j] * (xs[j / R] * w[j % R]); }
        y[p.y_off + (r0 + t) * p.y_str + ((i % R) * p.H + h) * P + pp] = acc;
      }
    }
    workgroupBarrier();
    for (var e = lid; e < RN; e += WG) { sh[CKP() + e] = sh[CK() + (Lc - 1u) * RN + e]; }
    workgroupBarrier();
  }
  // the window's final angle, k, v states, in place
  for (var i = lid; i < S; i += WG) { s_ang[bh * S + i] = sh[CPH() + (L - 1u) * S + i]; }
  for (var e = lid; e < RN; e += WG) { s_k[k_index(b, h, e)] = sh[CKP() + e]; }
  let rl = b * p.T + t_end - 1u;
  for (var pp = lid; pp < P; pp += WG) { s_v[bh * P + pp] = x[p.x_off + rl * p.x_str + h * P + pp]; }
}
