// Mamba-2 SSD sequence forward with each chunk's sums as small matrix products in register tiles
// (py_engine/ops/ssd.py, path "parallel"; real GPUs): the same chunked sums as
// ssd_forward.wgsl (its header has the recurrence, the chunk form, the views and the buffers) in
// its F1 / F3 roles; its carry (ssd_forward_carry) runs between them. ssd_forward.wgsl gives a
// chunk 64 threads that read x, B and C from memory once per product term; here a workgroup of
// 256 stages the chunk's operands once in workgroup memory as vec4s and each thread owns a 4 x 4
// tile of a product, so one pair of 16-byte loads feeds 16 multiply-adds:
//   ssd_chunk_states  S_c[p, n] = sum_t (w_t x_t[p]) B_t[n], w_t = exp(cum_last - cum_t) dt_t
//                     (the chunk end state from zero, into work) and exp(cum_last): tiles of
//                     (4 rows p, 4 dims n) over XW [L, P] and B [L, N]
//   ssd_chunk_out     M[l, s] = (C_l . B_s) exp(cum_l - cum_s) dt_s (s <= l, else 0): tiles of
//                     (4 l, 4 s) over C^T and B^T [N, L];
//                     y[t, p] = sum_(s <= t) M[t, s] x_s[p] + exp(cum_t) sum_n C_t[n] hc[p, n]
//                     + D x_t[p]: tiles of (4 t, 4 p); C, B and hc staged in blocks of dims
// Every sum runs over the same terms in the same order as ssd_forward.wgsl's (the tiles add
// M's masked zeros, which change no sum): the same values, bit for bit where the compiler fuses
// the same multiply-adds.
// Workgroup memory: sh (the common lib's f32s) holds cum [L] | dt [L]; sv (vec4s, WS4 of them,
// the host sizes it and the blocks per entry point from the device's workgroup memory) holds,
// with PV = ceil(P / 4), NV = ceil(N / 4), LV = ceil(L / 4):
//   states  XW [L, PV] | a block of B [L, NBS] (NBS vec4s of dims at a time)
//   out     X [L, PV] | MT [L, LV] | blocks of NBO dims: C^T [NBO, LV] | B^T [NBO, LV] |
//           hc^T [NBO, PV]   (C^T, B^T, MT: a vec4 holds 4 tokens; MT[s, l/4] = M[l .. l+3, s])
// so a chunk of 32 tokens fits WebGPU's default 16 KiB at mamba2-130m's heads (blocks of 15
// vec4s of B and 7 dims: 3 and 19 blocks; 1 and 2 in an H200's 48 KiB). A thread owns at most one M tile and one y tile
// (accumulated over the blocks): the host keeps LV PV <= 256.
// Grid (H, nc * Bsz), one workgroup per (b, h, chunk), nc > 1 only.

const WG = 256u;   // threads per workgroup
override WS4: u32 = 1024u;
override NBS: u32 = 1u;   // ssd_chunk_states: B's vec4s of dims a block
override NBO: u32 = 1u;   // ssd_chunk_out: dims a block of C^T, B^T and hc^T
var<workgroup> sv: array<vec4<f32>, WS4>;

// Params, bindings, dt/x/B/C reads, chunk_of, chunk_prep (sh: cum | dt)
//#include "lib/ssd_forward_common.wgsl"

// x_t[p0 .. p0+3] and B_t[n0 .. n0+3] of the chunk's token t (0 past P, N)
fn x4_of(ch: Chunk, t: u32, p0: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (p0 + i < p.P) { v[i] = xv(ch.r0 + t, ch.h, p0 + i); }
  }
  return v;
}

fn b4_of(ch: Chunk, t: u32, n0: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    if (n0 + i < p.N) { v[i] = bv(ch.r0 + t, ch.g, n0 + i); }
  }
  return v;
}

// Tile, tile_run, tile_col, zero_tile: a thread's 4 x 4 tile of a product
//#include "lib/tile4.wgsl"

// Elements n0 .. n0 + 3 (those below N) of state row pp of this chunk's S into work.
fn put_state(base: u32, pp: u32, n0: u32, v: vec4<f32>) {
  if (pp >= p.P) { return; }
  let o = p.w_s + base + pp * p.N + n0;
  for (var i = 0u; i < 4u; i++) {
    if (n0 + i < p.N) { work[o + i] = v[i]; }
  }
}

// F1: S_c of this chunk into work (element (pp, n) at pp N + n), exp(cum_last) into work.
@compute @workgroup_size(WG)
fn ssd_chunk_states(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }   // uniform: depends on the workgroup only
  chunk_prep(ch, lid);
  let L = p.L;
  let P = p.P;
  let N = p.N;
  let len = ch.len;
  let PV = vecs(P);
  let NV = vecs(N);
  let XB = L * PV;          // B's block in sv
  let last = sh[len - 1u];
  for (var e = lid; e < len * PV; e += WG) { sv[e] = end_weight(e / PV, last) * x4_of(ch, e / PV, 4u * (e % PV)); }
  let base = chunk_slot(ch) * P * N;
  for (var nb = 0u; nb < NV; nb += NBS) {           // B in blocks of NBS vec4s of dims
    let nn = min(NBS, NV - nb);
    workgroupBarrier();                             // the last block's tiles are done with B
    for (var e = lid; e < len * nn; e += WG) { sv[XB + e] = b4_of(ch, e / nn, 4u * (nb + e % nn)); }
    workgroupBarrier();
    // tile (4 rows from p0, 4 dims from n0); consecutive threads take consecutive n0: B's loads
    // are consecutive vec4s, XW's the same one
    for (var tile = lid; tile < PV * nn; tile += WG) {
      let pi = tile / nn;
      let ni = tile % nn;
      let a = tile_run(zero_tile(), pi, PV, XB + ni, nn, len);
      let p0 = 4u * pi;
      let n0 = 4u * (nb + ni);
      put_state(base, p0, n0, a.r0);
      put_state(base, p0 + 1u, n0, a.r1);
      put_state(base, p0 + 2u, n0, a.r2);
      put_state(base, p0 + 3u, n0, a.r3);
    }
  }
  if (lid == 0u) { work[p.w_dec + chunk_slot(ch)] = exp(last); }
}

// Row t of the chunk's y, dims 4 pi .. 4 pi + 3 (those below P): the intra-chunk sum, the
// start state's term and the D skip, added in ssd_forward's order.
fn put_y(ch: Chunk, t: u32, pi: u32, intra: vec4<f32>, inter: vec4<f32>, x4: vec4<f32>, D: f32) {
  if (t >= ch.len) { return; }
  let o = p.y_off + (ch.r0 + t) * p.y_str + ch.h * p.P;
  for (var i = 0u; i < 4u; i++) {
    let pp = 4u * pi + i;
    if (pp < p.P) {
      var acc = intra[i];
      acc += exp(sh[t]) * inter[i];
      y[o + pp] = acc + D * x4[i];
    }
  }
}

// F3: y of this chunk's tokens from its start state hc[b, c, h] (written by the carry).
@compute @workgroup_size(WG)
fn ssd_chunk_out(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }
  chunk_prep(ch, lid);
  let L = p.L;
  let P = p.P;
  let N = p.N;
  let len = ch.len;
  let PV = vecs(P);
  let LV = vecs(L);
  let RM = L * PV;                       // MT (X at 0)
  let RC = RM + L * LV;                  // the block of C^T
  let RB = RC + NBO * LV;                // of B^T
  let RH = RB + NBO * LV;                // of hc^T
  for (var e = lid; e < len * PV; e += WG) { sv[e] = x4_of(ch, e / PV, 4u * (e % PV)); }
  // thread lid owns M's tile (4 l from 4 li, 4 s from 4 si) and y's (4 t from 4 ti, 4 rows
  // from 4 pi), where there is one
  let li = lid / LV;
  let si = lid % LV;
  let owns_m = lid < LV * LV && si <= li;           // tiles above the diagonal are all masked
  let ti = lid / PV;
  let pi = lid % PV;
  let busy = lid < LV * PV;
  var m = zero_tile();                   // row j: C_l . B_s for l = 4 li + j, s = 4 si + k
  var yh = zero_tile();                  // row j: sum_n C_t[n] hc[p, n], t = 4 ti + j
  let hb = chunk_slot(ch) * P * N;
  for (var nb = 0u; nb < N; nb += NBO) { // C, B and hc in blocks of NBO dims
    let nn = min(NBO, N - nb);
    workgroupBarrier();                  // the last block's sums are done with it
    for (var e = lid; e < nn * LV; e += WG) {       // consecutive threads: consecutive dims
      let k = e % nn;
      let tb = e / nn;
      var c = vec4<f32>(0.0);
      var b = vec4<f32>(0.0);
      for (var i = 0u; i < 4u; i++) {
        let t = 4u * tb + i;
        if (t < len) {
          c[i] = cv(ch.r0 + t, ch.g, nb + k);
          b[i] = bv(ch.r0 + t, ch.g, nb + k);
        }
      }
      sv[RC + k * LV + tb] = c;
      sv[RB + k * LV + tb] = b;
    }
    for (var e = lid; e < nn * PV; e += WG) {
      let k = e % nn;
      let pv = e / nn;
      var v = vec4<f32>(0.0);
      for (var i = 0u; i < 4u; i++) {
        let pp = 4u * pv + i;
        if (pp < P) { v[i] = hc[hb + pp * N + nb + k]; }
      }
      sv[RH + k * PV + pv] = v;
    }
    workgroupBarrier();
    if (owns_m) {
      m = tile_run(m, RC + li, LV, RB + si, LV, nn);
    }
    if (busy) {
      yh = tile_run(yh, RC + ti, LV, RH + pi, PV, nn);
    }
  }
  // M's columns into MT, scaled; mask first, so exp() only of cum[l] - cum[s] <= 0
  if (lid < LV * LV) {
    for (var k = 0u; k < 4u; k++) {
      let s = 4u * si + k;
      if (s < L) {
        let g = tile_col(m, k);
        var col = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
          let l = 4u * li + j;
          if (s <= l && l < len) { col[j] = m_entry(g[j], l, s); }
        }
        sv[RM + s * LV + li] = col;
      }
    }
  }
  workgroupBarrier();
  if (busy) {
    // row j: sum_(s <= t) M[t, s] x_s, t = 4 ti + j
    let yi = tile_run(zero_tile(), RM + ti, LV, pi, PV, min(4u * ti + 4u, len));
    var D = 0.0;
    if (has(HAS_D)) { D = Dv[ch.h]; }
    let t0 = 4u * ti;
    put_y(ch, t0, pi, yi.r0, yh.r0, sv[min(t0, len - 1u) * PV + pi], D);
    put_y(ch, t0 + 1u, pi, yi.r1, yh.r1, sv[min(t0 + 1u, len - 1u) * PV + pi], D);
    put_y(ch, t0 + 2u, pi, yi.r2, yh.r2, sv[min(t0 + 2u, len - 1u) * PV + pi], D);
    put_y(ch, t0 + 3u, pi, yi.r3, yh.r3, sv[min(t0 + 3u, len - 1u) * PV + pi], D);
  }
}
