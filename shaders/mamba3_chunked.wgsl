// Mamba-3's chunked scan with a head's chunks side by side (py_engine/ops/mamba3.py,
// mamba3_forward path "parallel"): the same sums as mamba3_forward.wgsl's mamba3_chunk_scan
// (see its header for the recurrence and the chunk form), arranged so that only two short walks
// are sequential. mamba3_chunk_scan has one workgroup walk all of a head's chunks in order, so
// a model with 24 heads kept 24 workgroups busy on a 132-SM GPU, each waiting on its own chain
// of loads and barriers (97% of mamba3-187m's prefill of 1,024 tokens, H200). Here, per token
// window [t0, t0 + tn) (whole chunks of L = CHUNK tokens):
//   mamba3_phi          one thread per (b, h, angle i): phi_t for every token of the window, in
//                       order (the same sum and wrap as mamba3_chunk_scan's phase 1; the inputs
//                       loaded eight tokens ahead), into
//                       phi (rows of the window only); the window's last into the angle state.
//   mamba3_chunk_delta  one workgroup per (h, b, chunk): the chunk's k rotated (phi from phi),
//                       its scalar rows, and D_c = cl_c (c0 v_prev k_prev^T) + sum_t dw_t v_t k_t^T
//                       [P, N] (the chunk's final state from a zero start), and cl_c = prod alpha.
//   mamba3_chunk_carry  one thread per (b, h, p, n): the chunk start states in order,
//                       S_c = cl_{c-1} S_{c-1} + D_{c-1} (S at the window's start: the state, or 0),
//                       written over D_c; the window's final state into the ssm state.
//   mamba3_chunk_out    one workgroup per (h, b, chunk): rotation, scalars and M again, and y of
//                       the chunk's tokens from its start state (mamba3_chunk_scan's phase 5
//                       without the state update); the last chunk's last k into kfin.
// The host copies the k and v states into `scratch` first (they are read as k_prev / v_prev of
// the window's first chunk while the last chunk writes the new k) and kfin and the window's last
// x row back into them after. v_prev and k_prev of any other chunk are its previous token's x
// and rotated k (phi of that token: the tile at CPP).
//
// Bindings: lib/mamba3_side_by_side.wgsl.

const HAS_INIT = 1u;
//#include "lib/mamba3_params.wgsl"
//#include "lib/mamba3_side_by_side.wgsl"

// The delta and out kernels here: a thread per (state row pp, n class q): dims n = q, q + NQ,
// q + 2 NQ .. (NQ a pipeline constant, 1, 2 or 4; the host keeps P NQ R L within the k and q
// tiles, where out gathers the classes' shares of y).
override NQ: u32 = 1u;

fn CPP() -> u32 { return CKP() + RANK * p.N; }   // phi of the chunk's previous token [S]

// phi walked over tokens [t_begin, t_end) of (b, h, angle i) from ph0, stored into phi where
// `store`: eight tokens' theta and DT loaded before any is used, then walked in order -- the same
// steps as angle_step (one memory wait per eight tokens instead of per token)
fn phi_walk(ph0: f32, b: u32, h: u32, i: u32, t_begin: u32, t_end: u32, store: bool) -> f32 {
  let S = p.S;
  var ph = ph0;
  var t = t_begin;
  for (; t + 8u <= t_end; t += 8u) {
    var th: array<f32, 8>;
    var dt: array<f32, 8>;
    for (var u = 0u; u < 8u; u++) {
      let row = (b * p.T + t + u) * p.pw;
      th[u] = pre[row + 4u * p.H + i];
      dt[u] = pre[row + h];
    }
    for (var u = 0u; u < 8u; u++) {
      ph = wrap_angle(ph + th[u] * dt[u]);
      if (store) { phi[phi_row(b, t + u) * p.H * S + h * S + i] = ph; }
    }
  }
  for (; t < t_end; t++) {
    ph = angle_step(ph, (b * p.T + t) * p.pw, h, i);
    if (store) { phi[phi_row(b, t) * p.H * S + h * S + i] = ph; }
  }
  return ph;
}

@compute @workgroup_size(WG)
fn mamba3_phi(@builtin(global_invocation_id) gid: vec3<u32>) {
  let S = p.S;
  let k = gid.x;
  if (k >= p.nb * p.H * S) { return; }
  let bh = k / S;
  let i = k % S;
  let w = window();
  var ph = 0.0;
  if (w.carried) { ph = s_ang[bh * S + i]; }
  s_ang[bh * S + i] = phi_walk(ph, bh / p.H, bh % p.H, i, p.t0, w.t_end, true);
}

// mamba3_phi with each (b, h, angle)'s tokens cut into PHI_SEGS segments walked side by side
// (py_engine/ops/mamba3.phi_segments): mamba3_phi's one thread walks the window's every token in
// order -- at 1,024 tokens 17% of mamba3-187m's prefill (H100, native profile), 768 threads
// waiting on 128 rounds of loads. A workgroup here is PHI_AG angles x PHI_SEGS segments of one
// (b, h): each thread walks its segment from 0 (the same sum and wrap a token), a thread an angle
// adds the segments' sums to the window's start angle in order (wrapped each time), and each
// thread walks its segment again from that carry, writing phi (and the last token's into the
// angle state). The same steps as mamba3_phi
// within a segment; the carry's wraps round differently (well within the 1e-5 the parallel
// forms keep to the serial scan). Grid: nb * H * ceil(S / PHI_AG).
const PHI_SEGS = 32u;
const PHI_AG = 8u;                       // angles a workgroup (PHI_AG * PHI_SEGS = 256 threads)
// [PHI_AG][PHI_SEGS]: a segment's walk from 0, then the carry it starts from
var<workgroup> seg_end: array<f32, 256>;

@compute @workgroup_size(256)
fn mamba3_phi_segments(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let S = p.S;
  let groups = (S + PHI_AG - 1u) / PHI_AG;
  let wg = wid.x + wid.y * nwg.x;                  // the host folds the grid (ops/_common.fold)
  if (wg >= p.nb * p.H * groups) { return; }       // uniform: the workgroup's id
  let bh = wg / groups;
  let a = lid / PHI_SEGS;
  let j = lid % PHI_SEGS;
  let i = (wg % groups) * PHI_AG + a;
  let live = i < S;
  let b = bh / p.H;
  let h = bh % p.H;
  let w = window();
  let seg_len = (w.t_end - p.t0 + PHI_SEGS - 1u) / PHI_SEGS;
  let t_begin = min(p.t0 + j * seg_len, w.t_end);
  let t_end = min(t_begin + seg_len, w.t_end);
  if (live) { seg_end[lid] = phi_walk(0.0, b, h, i, t_begin, t_end, false); }
  workgroupBarrier();
  if (live && j == 0u) {                   // the carries in order, from the window's start angle
    var c = 0.0;
    if (w.carried) { c = s_ang[bh * S + i]; }
    for (var k = 0u; k < PHI_SEGS; k++) {
      let sum = seg_end[a * PHI_SEGS + k];
      seg_end[a * PHI_SEGS + k] = c;
      c = wrap_angle(c + sum);
    }
  }
  storageBarrier();                        // s_ang read above before the last segment writes it
  workgroupBarrier();
  if (live) {
    let last = phi_walk(seg_end[lid], b, h, i, t_begin, t_end, true);
    // the angle state: the window's last token's phi as stored (the segment holding it)
    if (t_begin < t_end && t_end == w.t_end) { s_ang[bh * S + i] = last; }
  }
}

// The chunk a workgroup of the delta and out kernels owns, its tiles filled: phi, k_prev, the
// rotated k and q, the scalar rows (a barrier after). Uniform per workgroup.
fn chunk_tiles(wid: vec3<u32>, lid: u32, w: Window) -> Chunk {
  let k = chunk_at(wid, w);
  load_phi(k, lid, CPH(), CPP());
  token_rows(k.b, k.h, k.t0, k.Lc, lid, CS());
  workgroupBarrier();
  load_k_prev(k, lid, w, CPP(), CKP());
  chunk_rotate(k.b, k.h, k.g, k.t0, k.Lc, lid);
  chunk_scalars(k.Lc, lid, CS());
  workgroupBarrier();
  return k;
}

@compute @workgroup_size(CWG)
fn mamba3_chunk_delta(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  if (!owns_chunk(wid)) { return; }
  let w = window();
  let k = chunk_tiles(wid, lid, w);
  let N = p.N;
  let R = RANK;
  let L = CHUNK;
  let Lc = k.Lc;
  let r0 = k.r0;
  let c0 = k.c0;
  let cl = sh[ROW_CP(CS()) + Lc - 1u];
  let base = chunk_base(k, w);
  for (var e = lid; e < p.P * NQ; e += CWG) {
    let pp = e / NQ;
    var xs: array<f32, MAX_L>;
    var wr: array<f32, MAX_R>;
    for (var j = 0u; j < R; j++) { wr[j] = mx(k.h, j, pp); }
    for (var t = 0u; t < L; t++) {
      if (t < Lc) { xs[t] = x[p.x_off + (r0 + t) * p.x_str + k.h * p.P + pp]; }
    }
    let vp = v_prev(k, pp);
    for (var n = e % NQ; n < N; n += NQ) {
      var kv = 0.0;                                  // sum_r mimo_x_r k_prev_r[n]
      for (var j = 0u; j < R; j++) { kv += wr[j] * sh[CKP() + j * N + n]; }
      var sn = cl * (c0 * vp * kv);
      // to CHUNK, a pipeline constant, not Lc: the loop unrolls and xs stays in registers
      for (var t = 0u; t < L; t++) {
        if (t < Lc) {
          var kt = 0.0;                              // sum_r mimo_x_r k_{t,r}[n]
          for (var j = 0u; j < R; j++) { kt += wr[j] * sh[CK() + (t * R + j) * N + n]; }
          sn += sh[ROW_DW(CS()) + t] * xs[t] * kt;
        }
      }
      chunks[base + pp * N + n] = sn;
    }
  }
  if (lid == 0u) { chunks[cl_index(k.b * p.H + k.h, k.cw, w)] = cl; }
}

@compute @workgroup_size(256)
fn mamba3_chunk_carry(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
  let PN = p.P * p.N;
  let k = gid.x + gid.y * nwg.x * 256u;
  if (k >= p.nb * p.H * PN) { return; }
  let bh = k / PN;
  let e = k % PN;
  let w = window();
  var s = 0.0;
  if (w.carried) { s = s_ssm[k]; }
  // eight chunks' D and cl loaded before any is used (a loop that loads and then stores waits a
  // memory latency a chunk: the stores may alias the next loads), then walked in order
  var cw = 0u;
  for (; cw + 8u <= w.chunks; cw += 8u) {
    var d: array<f32, 8>;
    var c: array<f32, 8>;
    for (var u = 0u; u < 8u; u++) {
      d[u] = chunks[(bh * w.chunks + cw + u) * PN + e];
      c[u] = chunks[cl_index(bh, cw + u, w)];
    }
    for (var u = 0u; u < 8u; u++) {
      chunks[(bh * w.chunks + cw + u) * PN + e] = s;
      s = c[u] * s + d[u];
    }
  }
  for (; cw < w.chunks; cw++) {
    let j = (bh * w.chunks + cw) * PN + e;
    let d = chunks[j];
    chunks[j] = s;
    s = chunks[cl_index(bh, cw, w)] * s + d;
  }
  s_ssm[k] = s;
}

@compute @workgroup_size(CWG)
fn mamba3_chunk_out(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  if (!owns_chunk(wid)) { return; }
  let w = window();
  let k = chunk_tiles(wid, lid, w);
  chunk_m(k.Lc, lid);
  let N = p.N;
  let P = p.P;
  let R = RANK;
  let L = CHUNK;
  let LR = L * R;
  let RN = R * N;
  let Lc = k.Lc;
  let LcR = Lc * R;
  let h = k.h;
  let r0 = k.r0;
  if (k.cw + 1u == w.chunks) {                      // the window's last k: the k state after
    for (var e = lid; e < RN; e += CWG) {
      scratch[KFIN() + k_index(k.b, h, e)] = sh[CK() + (Lc - 1u) * RN + e];
    }
  }
  workgroupBarrier();
  let Dh = pre[p.par + 2u * p.H * R * N + h];
  let c0 = k.c0;
  let base = chunk_base(k, w);
  // (pp, q): class q's share of sum_n a[pp, n] q_{t,r}[n] for every (t, r) of the chunk
  var ya: array<f32, MAX_LR>;
  let e = lid;
  let busy = e < P * NQ;
  if (busy) {
    let pp = e / NQ;
    var wr: array<f32, MAX_R>;
    for (var j = 0u; j < R; j++) { wr[j] = mx(h, j, pp); }
    for (var i = 0u; i < LR; i++) { ya[i] = 0.0; }
    let vp = v_prev(k, pp);
    for (var n = e % NQ; n < N; n += NQ) {
      var kv = 0.0;
      for (var j = 0u; j < R; j++) { kv += wr[j] * sh[CKP() + j * N + n]; }
      var a = c0 * vp * kv;
      a += chunks[base + pp * N + n];
      // to CHUNK, a pipeline constant, not Lc: the loop unrolls and ya stays in registers
      for (var t = 0u; t < L; t++) {
        if (t < Lc) {
          for (var j = 0u; j < R; j++) { ya[t * R + j] += a * sh[CQ() + (t * R + j) * N + n]; }
        }
      }
    }
  }
  workgroupBarrier();                               // the k and q tiles read: the shares go there
  if (busy) {
    for (var i = 0u; i < LR; i++) { sh[CK() + e * LR + i] = ya[i]; }
  }
  workgroupBarrier();
  // y[t, r, pp] = cp_t (the classes' shares in order) + D v + sum_(s, r') M v, (pp, i) over threads
  for (var f = lid; f < P * LcR; f += CWG) {
    let pp = f / LcR;
    let i = f % LcR;
    let t = i / R;
    var sq = 0.0;
    for (var q = 0u; q < NQ; q++) { sq += sh[CK() + (pp * NQ + q) * LR + i]; }
    let wi = mx(h, i % R, pp);
    let xt = x[p.x_off + (r0 + t) * p.x_str + h * P + pp];
    var acc = sh[ROW_CP(CS()) + t] * sq + Dh * xt * wi;
    for (var j = 0u; j < (t + 1u) * R; j++) {
      let xj = x[p.x_off + (r0 + j / R) * p.x_str + h * P + pp];
      acc += sh[CM() + i * LR + j] * (xj * mx(h, j % R, pp));
    }
    y[p.y_off + (r0 + t) * p.y_str + ((i % R) * p.H + h) * P + pp] = acc;
  }
}
