// Mamba-3's chunks-side-by-side delta and out kernels with the chunk's products in register
// tiles (py_engine/ops/mamba3.py, path "parallel" with tiles): the same chunk sums as
// mamba3_chunked.wgsl's mamba3_chunk_delta / mamba3_chunk_out (whose angle walk and carry run
// between them, unchanged; its header has the dispatches, mamba3_forward.wgsl's the recurrence),
// in another arrangement. There a thread owns (state row, class of dims) and reads every product
// term from workgroup memory, its tokens in register arrays (which held chunks to 8 tokens: 16
// measured slower); here, as in Mamba-2's ssd_chunked.wgsl, a chunk's operands are staged once
// as vec4s and each thread owns a 4 x 4 tile of a product, so the chunks can be long (the chunk
// states the carry walks shrink as 1 / L) and the k, q and state operands pass in blocks of dims
// sized from the device's workgroup memory. Rows (t, r) of a chunk are its tokens' ranks, i =
// t R + r (SISO: R 1); u(t, r)[pp] = x_t[pp] mimo_x[h, r, pp] (the value a rank writes).
//   mamba3_tile_delta  D_c[pp, n] = sum_r (cl c0 v_prev[pp] mimo_x[r, pp]) k_prev_r[n]
//                                 + sum_(t, r) (dw_t u(t, r)[pp]) k_(t, r)[n]
//                      tiles (4 rows pp, 4 dims n) over XW [R + L R, PV] and blocks of K
//                      [R + L R, NBS]: the k_prev rows first, then the tokens in order (the
//                      order of mamba3_chunk_delta's sum); cl_c = prod alpha.
//   mamba3_tile_out    M[i, j] = (q_i . k_j) dec(s+1 .. t) wl_s (- (q_i . k_i) shn_t where
//                      s = t), token s of j <= token t of i, else 0: tiles (4 i, 4 j) over
//                      Q^T, K^T [NBO, LRV]; y_i[pp] = cp_t sum_n q_i[n] a[pp, n]
//                      + D x_t[pp] mimo_x[r, pp] + sum_j M[i, j] u_j[pp], with a = S_c
//                      + c0 v_prev k_prev'^T (k_prev' = sum_r mimo_x[r, pp] k_prev_r): tiles
//                      (4 i, 4 pp) over Q^T and a^T [NBO, PV], and over MT and U; the last
//                      chunk's last k into kfin.
// Different association than the thread-per-row kernels (their sums are added in the same order,
// y's three terms are summed before they meet): the same values to rounding.
// Workgroup memory: sh (f32s, WS of them) holds phi [L, S] at TPH | the previous token's phi [S]
// at TPP | the 7 scalar rows [L] at TS (lib/mamba3_chunk_common's ROW_*) | k_prev [R, N] at TKP.
// sv (vec4s, WS4 of them; the host sizes it and the blocks from the device's workgroup memory,
// ops/mamba3_tiles.blocks), with PV = ceil(P/4), LRV = ceil(L R / 4):
//   delta  XW [R + L R, PV] | a block of K [R + L R, NBS] (NBS vec4s of dims)
//   out    U [L R, PV] | MT [L R, LRV] (MT[j, i/4] = M[i .. i+3, j]) | blocks of NBO dims:
//          Q^T [NBO, LRV] | K^T [NBO, LRV] | a^T [NBO, PV]
// A thread owns at most one M tile and one y tile: the host keeps LRV max(PV, LRV) <= 256.
// Grid (H, Bsz, chunks of the window), as mamba3_chunked's.

const HAS_INIT = 1u;
//#include "lib/mamba3_params.wgsl"
//#include "lib/mamba3_side_by_side.wgsl"
// Tile, tile_add, tile_run, tile_col, zero_tile, vecs
//#include "lib/tile4.wgsl"

override WS4: u32 = 1024u;
override NBS: u32 = 1u;   // mamba3_tile_delta: K's vec4s of dims a block
override NBO: u32 = 1u;   // mamba3_tile_out: dims a block of Q^T, K^T and a^T
var<workgroup> sv: array<vec4<f32>, WS4>;

fn TPH() -> u32 { return 0u; }
fn TPP() -> u32 { return CHUNK * p.S; }
fn TS() -> u32 { return TPP() + p.S; }
fn TKP() -> u32 { return TS() + 7u * CHUNK; }
// The chunk a workgroup owns with phi, k_prev and the scalar rows (at TS: lib/mamba3_chunk_common's
// token_rows and chunk_scalars) in sh, a barrier after.
fn tile_setup(wid: vec3<u32>, lid: u32, w: Window) -> Chunk {
  let k = chunk_at(wid, w);
  load_phi(k, lid, TPH(), TPP());
  token_rows(k.b, k.h, k.t0, k.Lc, lid, TS());
  workgroupBarrier();
  load_k_prev(k, lid, w, TPP(), TKP());
  chunk_scalars(k.Lc, lid, TS());
  workgroupBarrier();
  return k;
}

// u(t, r)[pp .. pp+3] of row i = t R + r: x_t mimo_x[h, r] (0 past P)
fn u4_of(k: Chunk, i: u32, p0: u32) -> vec4<f32> {
  let t = i / RANK;
  let r = i % RANK;
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    let pp = p0 + c;
    if (pp < p.P) { v[c] = x[p.x_off + (k.r0 + t) * p.x_str + k.h * p.P + pp] * mx(k.h, r, pp); }
  }
  return v;
}

// Rotated (k, q) of row i = t R + r, dim n
fn kq_row(k: Chunk, i: u32, n: u32) -> vec2<f32> {
  let t = i / RANK;
  return kq_rotated(k.r0 + t, k.h, k.g, i % RANK, n, TPH() + t * p.S);
}

// Elements n0 .. n0 + 3 (those below N) of state row pp of this chunk's D into chunks.
fn put_delta(base: u32, pp: u32, n0: u32, v: vec4<f32>) {
  if (pp >= p.P) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (n0 + c < p.N) { chunks[base + pp * p.N + n0 + c] = v[c]; }
  }
}

@compute @workgroup_size(CWG)
fn mamba3_tile_delta(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  if (!owns_chunk(wid)) { return; }
  let w = window();
  let k = tile_setup(wid, lid, w);
  let R = RANK;
  let P = p.P;
  let N = p.N;
  let PV = vecs(P);
  let NV = vecs(N);
  let rows = R + k.Lc * R;                         // k_prev's R rows, then the chunk's (t, r)
  let KB = (R + CHUNK * R) * PV;                   // K's block in sv
  let cl = sh[ROW_CP(TS()) + k.Lc - 1u];
  for (var e = lid; e < rows * PV; e += CWG) {
    let j = e / PV;
    let p0 = 4u * (e % PV);
    var v = vec4<f32>(0.0);
    if (j < R) {                                   // cl (c0 v_prev) mimo_x[j]
      for (var c = 0u; c < 4u; c++) {
        let pp = p0 + c;
        if (pp < P) { v[c] = cl * (k.c0 * v_prev(k, pp)) * mx(k.h, j, pp); }
      }
    } else {
      v = sh[ROW_DW(TS()) + (j - R) / R] * u4_of(k, j - R, p0);
    }
    sv[e] = v;
  }
  let base = chunk_base(k, w);
  for (var nb = 0u; nb < NV; nb += NBS) {          // K in blocks of NBS vec4s of dims
    let nn = min(NBS, NV - nb);
    workgroupBarrier();                            // the last block's tiles are done with K
    for (var e = lid; e < rows * nn; e += CWG) {
      let j = e / nn;
      let n0 = 4u * (nb + e % nn);
      var v = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        let n = n0 + c;
        if (n < N) {
          if (j < R) { v[c] = sh[TKP() + j * N + n]; } else { v[c] = kq_row(k, j - R, n).x; }
        }
      }
      sv[KB + e] = v;
    }
    workgroupBarrier();
    // tile (4 rows from p0, 4 dims from n0); consecutive threads take consecutive n0
    for (var tile = lid; tile < PV * nn; tile += CWG) {
      let pi = tile / nn;
      let ni = tile % nn;
      let a = tile_run(zero_tile(), pi, PV, KB + ni, nn, rows);
      let p0 = 4u * pi;
      let n0 = 4u * (nb + ni);
      put_delta(base, p0, n0, a.r0);
      put_delta(base, p0 + 1u, n0, a.r1);
      put_delta(base, p0 + 2u, n0, a.r2);
      put_delta(base, p0 + 3u, n0, a.r3);
    }
  }
  if (lid == 0u) { chunks[cl_index(k.b * p.H + k.h, k.cw, w)] = cl; }
}

// M[i, j] from g = q_i . k_j: decayed from token s of j to token t of i and weighted (0 where s
// is past t or i past the chunk): mamba3_chunk_common's chunk_m, its decays from sh.
fn m_of(g: f32, i: u32, j: u32, LcR: u32) -> f32 {
  let t = i / RANK;
  let s = j / RANK;
  if (s > t || i >= LcR) { return 0.0; }
  var dec = 1.0;
  for (var r = s + 1u; r <= t; r++) { dec *= sh[ROW_AL(TS()) + r]; }
  var m = g * dec * sh[ROW_WL(TS()) + s];
  if (s == t) { m -= g * sh[ROW_SHN(TS()) + t]; }
  return m;
}

// Row i of the chunk's y, dims 4 pi .. 4 pi + 3 (those below P): the start state's term, the D
// skip and the intra-chunk sum.
fn put_y(k: Chunk, i: u32, pi: u32, inter: vec4<f32>, intra: vec4<f32>, Dh: f32, LcR: u32) {
  if (i >= LcR) { return; }
  let t = i / RANK;
  let r = i % RANK;
  let o = p.y_off + (k.r0 + t) * p.y_str + (r * p.H + k.h) * p.P;
  let cp = sh[ROW_CP(TS()) + t];
  for (var c = 0u; c < 4u; c++) {
    let pp = 4u * pi + c;
    if (pp < p.P) {
      let xt = x[p.x_off + (k.r0 + t) * p.x_str + k.h * p.P + pp];
      y[o + pp] = cp * inter[c] + Dh * xt * mx(k.h, r, pp) + intra[c];
    }
  }
}

@compute @workgroup_size(CWG)
fn mamba3_tile_out(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  if (!owns_chunk(wid)) { return; }
  let w = window();
  let k = tile_setup(wid, lid, w);
  let R = RANK;
  let P = p.P;
  let N = p.N;
  let PV = vecs(P);
  let LR = CHUNK * R;
  let LRV = vecs(LR);
  let LcR = k.Lc * R;
  let RM = LR * PV;                        // MT (U at 0)
  let RC = RM + LR * LRV;                  // the block of Q^T
  let RK = RC + NBO * LRV;                 // of K^T
  let RA = RK + NBO * LRV;                 // of a^T
  if (k.cw + 1u == w.chunks) {             // the window's last k: the k state after
    for (var e = lid; e < R * N; e += CWG) {
      scratch[KFIN() + k_index(k.b, k.h, e)] = kq_row(k, LcR - R + e / N, e % N).x;
    }
  }
  for (var e = lid; e < LcR * PV; e += CWG) { sv[e] = u4_of(k, e / PV, 4u * (e % PV)); }
  // thread lid owns M's tile (4 i from 4 li, 4 j from 4 si) and y's (4 i from 4 ti, 4 rows
  // from 4 pi), where there is one; an M tile whose first column's token is past its last
  // row's is all zeros
  let li = lid / LRV;
  let si = lid % LRV;
  let owns_m = lid < LRV * LRV && (4u * si) / R <= (4u * li + 3u) / R;
  let ti = lid / PV;
  let pi = lid % PV;
  let busy = lid < LRV * PV;
  var m = zero_tile();                     // row c: q_i . k_j, i = 4 li + c, j = 4 si + column
  var yh = zero_tile();                    // row c: sum_n q_i[n] a[pp, n], i = 4 ti + c
  let base = chunk_base(k, w);
  for (var nb = 0u; nb < N; nb += NBO) {   // Q, K and a in blocks of NBO dims
    let nn = min(NBO, N - nb);
    workgroupBarrier();                    // the last block's sums are done with it
    for (var e = lid; e < nn * LRV; e += CWG) {     // consecutive threads: consecutive dims
      let kk = e % nn;
      let ib = e / nn;
      var qv = vec4<f32>(0.0);
      var kv = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        let i = 4u * ib + c;
        if (i < LcR) {
          let kq = kq_row(k, i, nb + kk);
          kv[c] = kq.x;
          qv[c] = kq.y;
        }
      }
      sv[RC + kk * LRV + ib] = qv;
      sv[RK + kk * LRV + ib] = kv;
    }
    for (var e = lid; e < nn * PV; e += CWG) {
      let kk = e % nn;
      let pv = e / nn;
      let n = nb + kk;
      var av = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        let pp = 4u * pv + c;
        if (pp < P) {
          var kp = 0.0;                    // sum_r mimo_x[r, pp] k_prev_r[n]
          for (var r = 0u; r < R; r++) { kp += mx(k.h, r, pp) * sh[TKP() + r * N + n]; }
          av[c] = k.c0 * v_prev(k, pp) * kp + chunks[base + pp * N + n];
        }
      }
      sv[RA + kk * PV + pv] = av;
    }
    workgroupBarrier();
    if (owns_m) {
      m = tile_run(m, RC + li, LRV, RK + si, LRV, nn);
    }
    if (busy) {
      yh = tile_run(yh, RC + ti, LRV, RA + pi, PV, nn);
    }
  }
  // M's columns into MT, decayed and weighted
  if (lid < LRV * LRV) {
    for (var c = 0u; c < 4u; c++) {
      let j = 4u * si + c;
      if (j < LR) {
        let g = tile_col(m, c);
        var col = vec4<f32>(0.0);
        for (var q = 0u; q < 4u; q++) { col[q] = m_of(g[q], 4u * li + q, j, LcR); }
        sv[RM + j * LRV + li] = col;
      }
    }
  }
  workgroupBarrier();
  if (busy) {
    // row c: sum_j M[i, j] u_j, i = 4 ti + c, over the columns j up to the last row's token
    let j_end = min(((4u * ti + 3u) / R + 1u) * R, LcR);
    let yi = tile_run(zero_tile(), RM + ti, LRV, pi, PV, j_end);
    let Dh = pre[p.par + 2u * p.H * R * N + k.h];
    put_y(k, 4u * ti, pi, yh.r0, yi.r0, Dh, LcR);
    put_y(k, 4u * ti + 1u, pi, yh.r1, yi.r1, Dh, LcR);
    put_y(k, 4u * ti + 2u, pi, yh.r2, yi.r2, Dh, LcR);
    put_y(k, 4u * ti + 3u, pi, yh.r3, yi.r3, Dh, LcR);
  }
}
