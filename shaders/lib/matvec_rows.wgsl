// The weight-streaming mat-vec shared by shaders/matvec_<format>.wgsl (decode: M <= 4 rows).
//   y_g[m, j] (+)= sum_k x[m, k] * W_g[j, k] (+ bias[j])      g < G <= 3 matrices sharing x
// With flags bit2 the input is RMS-normalised first, x[m, k] -> x[m, k] * rstd[m] * nw[k]
// (rstd = 1/sqrt(mean_k x[m, k]^2 + eps)): a layer's pre-norm folded into its input
// projections, one dispatch fewer per layer when decoding (py_engine/ops/rmsnorm.NormedRows).
// Bandwidth-bound: each weight is read once per token in 16-byte chunks (vec4<u32>/vec4<f32>).
// TPR threads share a row (a pipeline override the host picks from K and N: 16..256) and each
// thread reads RPT rows (below), so a 256-thread workgroup covers 256/TPR * RPT rows;
// consecutive threads read consecutive chunks (coalesced), and the row's partial sums meet in a
// shared-memory tree (no subgroup op: correct whatever the subgroup size, and the reduction is a
// small part of the row's reads).
// The including file defines, before this include:
//   const CV: u32       vec4s of values per 16-byte chunk (f32 1, f16/bf16 2, q8 4, q4 8)
//   alias Raw           the chunk as loaded (vec4<f32> or vec4<u32>)
//   fn load_raw(g: u32, row: u32, c: u32) -> Raw                chunk c of row `row`
//   fn raw_dot(q: Raw, xo: u32, no: u32) -> f32    its values (unscaled) dotted with the CV
//        vec4s xin(xo + i, no + i), i < CV, written out term by term
//   fn chunk_scale(g: u32, row: u32, c: u32) -> f32             their scale (1 when unscaled)
// and the weight bindings w (W_0 -> binding 2), w1 (binding 5), w2 (binding 6).
// Each thread issues four weight loads before decoding any of them: with one load in flight
// per thread the H200 read ~15-25% of its bandwidth (decode at the 1.4b shape).

struct Params { M: u32, N: u32, K: u32, flags: u32,        // bit0 bias, bit1 accumulate, bit2 norm
                G: u32, N1: u32, N2: u32, eps: f32 };      // matrices; rows of W_1, W_2; norm eps

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;      // [M, K/4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [N] (bit0), or z [M, K] (GATED)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [M, N]
@group(0) @binding(7) var<storage, read_write> y1: array<f32>;      // [M, N1]
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;      // [M, N2]
@group(0) @binding(9) var<storage, read> nw: array<vec4<f32>>;      // [K/4] norm weight (bit2)

override TPR: u32 = 64u;
// x rows M as a pipeline constant, not read from Params: with a constant trip count the
// per-row loops unroll and acc[m] / out[m] index registers, where a runtime M left them
// dynamically indexed (local memory on some compilers).
override MR: u32 = 1u;
// Weight rows per thread (1, 2 or 4; RPT * MR <= 4, as a thread's sums share one vec4 and one
// reduction tree): the thread reads the same chunk of RPT rows, so each x (and norm weight)
// load serves RPT rows. Narrow formats were bound by those loads, not by the weight stream (q4:
// 16 weight bytes per 128 bytes of x). Thread slot s of a workgroup owns rows
// row0 + s + ri * (THREADS / TPR), ri < RPT; every thread keeps four weight loads in flight (U chunks
// of RPT rows).
override RPT: u32 = 1u;
const THREADS = 256u;
var<workgroup> red: array<vec4<f32>, THREADS>;

fn rows_of(g: u32) -> u32 {
  switch g { case 0u: { return p.N; } case 1u: { return p.N1; } default: { return p.N2; } }
}

fn ystore(g: u32, idx: u32, v: f32) {
  switch g { case 0u: { y[idx] = v; } case 1u: { y1[idx] = v; } default: { y2[idx] = v; } }
}

fn yload(g: u32, idx: u32) -> f32 {
  switch g { case 0u: { return y[idx]; } case 1u: { return y1[idx]; } default: { return y2[idx]; } }
}

// Whether the rows are RMS-normalised (flags bit2, given again as a pipeline constant so that no
// load of the weight loop waits on a runtime branch).
override NORMED: bool = false;
// A gate folded in (no bias: binding 3 holds the gate z [M, K] instead): the input is
// x[m, k] * silu(z[m, k]) -- Mamba-3's gate before out_proj, two dispatches fewer per decoded
// layer -- and with NORMED that normalised over the row and times the norm weight:
// transformers' MambaRMSNormGated (norm_before_gate=False, one group) feeding Mamba-2's
// out_proj, one dispatch fewer.
override GATED: bool = false;
// NemotronH's MLP activation folded into down_proj's input: relu(x)^2 (RELU2), the same two
// operations as activations_forward.wgsl's relu2_forward -- one dispatch fewer per decoded MLP
// layer.
override RELU2: bool = false;

// Vec4 i of x ([M, K/4]): gated by silu(z) (GATED), or through relu^2 (RELU2).
fn x_at(i: u32) -> vec4<f32> {
  let v = x4[i];
  if (RELU2) {
    let r = max(v, vec4<f32>(0.0));
    return r * r;
  }
  if (!GATED) { return v; }
  let zv = vec4<f32>(bias[4u * i], bias[4u * i + 1u], bias[4u * i + 2u], bias[4u * i + 3u]);
  return v * zv / (vec4<f32>(1.0) + exp(-zv));
}

// Inputs i of x (as vec4s; ni: the same inputs' slot of the norm weight), times the norm weight
// when the rows are normalised (1/rms is applied to the finished sums). The formats' raw_dot
// calls it once per vec4 of a chunk, written out: no arrays. A first version of the RPT kernel
// held the four loads and the decoded chunk in loop-indexed arrays and ran the q4/q8 mat-vecs
// 4-20x slower on the H200 (by all signs local memory); this form measured at or below the
// old kernel's time on the in_proj shape in every format.
fn xin(i: u32, ni: u32) -> vec4<f32> {
  if (STAGE) { return xt[(i % CV) * TC + i / CV - tile_c0]; }
  if (NORMED) { return x_at(i) * nw[ni]; }
  return x_at(i);
}

// Staged x (STAGE, one x row only): lane l of a row reads chunk c0 + l, whose 4*CV inputs are
// CV vec4s -- consecutive lanes read x CV vec4s apart, so with narrow formats one load
// instruction of a warp touched up to 16 cache lines (q4: 128 bytes of x per 16 weight bytes,
// half of what bounded the q4 mat-vec: on an H200 staging took mamba-1.4b q4 from 227 to 296 tok/s;
// on by rule, py_engine/ops/weight_format.stage_x). Staged, a workgroup copies x
// (times the norm weight) one tile of TILE vec4s at a time into workgroup memory, chunk-
// interleaved: vec4 i of chunk c at xt[i * TC + c - tile_c0], so the lanes' reads of one i are
// consecutive. Two barriers per tile.
override STAGE: bool = false;
const TILE = 512u;                       // vec4s of x per tile: 2,048 inputs, 8 KB
const TC = TILE / CV;                    // chunks per tile
var<workgroup> xt: array<vec4<f32>, TILE>;
var<private> tile_c0: u32;               // the first chunk of the tile in xt

// Tile t of x row 0 into xt (past K: zeros), times the norm weight when normalised.
fn stage_tile(t: u32, lid: u32, xs: u32) {
  for (var v = lid; v < TILE; v += THREADS) {
    let gi = t * TILE + v;
    var val = vec4<f32>(0.0);
    if (gi < xs) {
      val = x_at(gi);
      if (NORMED) { val *= nw[gi]; }
    }
    xt[(v % CV) * TC + v / CV] = val;
  }
}

// Load slot s < 4 of a thread's trip: row ri = s % RPT of its rows (clamped: past-the-end rows
// compute row N-1 and store nothing), chunk c + (s / RPT) * TPR. Plain arithmetic on pipeline
// constants, not arrays (see xin).
fn slot_row(row: u32, N: u32, s: u32) -> u32 { return min(row + (s % RPT) * (THREADS / TPR), N - 1u); }
fn slot_chunk(c: u32, s: u32) -> u32 { return c + (s / RPT) * TPR; }

// Load slot s's chunk dotted with each x row m, in component (s % RPT) * MR + m. The format's
// scale multiplies the chunk's dot product, not each value.
fn slot_sum(q: Raw, s: u32, g: u32, r: u32, cc: u32, xs: u32) -> vec4<f32> {
  var out = vec4<f32>(0.0);
  let sc = chunk_scale(g, r, cc);
  for (var m = 0u; m < MR; m++) {
    out[(s % RPT) * MR + m] = raw_dot(q, m * xs + cc * CV, cc * CV) * sc;
  }
  return out;
}

// The thread's sums over chunks c0, c0 + TPR, ... below c1 of its rows (rows: the four load
// slots' rows), four weight loads in flight per trip.
fn walk(g: u32, rows: vec4<u32>, c0: u32, c1: u32, xs: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  let U = 4u / RPT;                     // chunks per trip: U * RPT = 4 weight loads in flight
  var c = c0;
  for (; c + (U - 1u) * TPR < c1; c += U * TPR) {
    let q0 = load_raw(g, rows.x, slot_chunk(c, 0u));
    let q1 = load_raw(g, rows.y, slot_chunk(c, 1u));
    let q2 = load_raw(g, rows.z, slot_chunk(c, 2u));
    let q3 = load_raw(g, rows.w, slot_chunk(c, 3u));
    acc += slot_sum(q0, 0u, g, rows.x, slot_chunk(c, 0u), xs);
    acc += slot_sum(q1, 1u, g, rows.y, slot_chunk(c, 1u), xs);
    acc += slot_sum(q2, 2u, g, rows.z, slot_chunk(c, 2u), xs);
    acc += slot_sum(q3, 3u, g, rows.w, slot_chunk(c, 3u), xs);
  }
  for (; c < c1; c += TPR) {             // the last chunks: one per row (slots 0 .. RPT-1)
    acc += slot_sum(load_raw(g, rows.x, c), 0u, g, rows.x, c, xs);
    if (RPT > 1u) { acc += slot_sum(load_raw(g, rows.y, c), 1u, g, rows.y, c, xs); }
    if (RPT > 2u) {
      acc += slot_sum(load_raw(g, rows.z, c), 2u, g, rows.z, c, xs);
      acc += slot_sum(load_raw(g, rows.w, c), 3u, g, rows.w, c, xs);
    }
  }
  return acc;
}

// Row sums of one workgroup's rows: lane 0 of each slot gets its rows' totals (tot[ri * MR + m])
// after the tree; `ok` is false for a workgroup past the end of W_g (uniform per workgroup).
struct RowSums { g: u32, N: u32, row: u32, lane: u32, tot: vec4<f32>, ok: bool };

fn row_sums(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowSums {
  var out: RowSums;
  let g = wid.z;
  let N = rows_of(g);
  out.g = g;
  out.N = N;
  let row0 = (wid.x + wid.y * nwg.x) * (THREADS / TPR) * RPT;
  out.ok = row0 < N;
  if (!out.ok) { return out; }          // uniform per workgroup (a smaller W_g of a multi call)
  let row = row0 + lid / TPR;
  let lane = lid % TPR;
  out.row = row;
  out.lane = lane;
  let xs = p.K / 4u;                    // vec4s per x row
  let nchunk = xs / CV;
  var rstd = vec4<f32>(1.0);
  if (NORMED) {                         // every workgroup computes the rows' 1/rms itself
    var ss = vec4<f32>(0.0);
    for (var k = lid; k < xs; k += THREADS) {
      for (var m = 0u; m < MR; m++) { let v = x_at(m * xs + k); ss[m] += dot(v, v); }
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var step = THREADS / 2u; step > 0u; step >>= 1u) {
      if (lid < step) { red[lid] += red[lid + step]; }
      workgroupBarrier();
    }
    let r = inverseSqrt(red[0] / f32(p.K) + p.eps);
    for (var ri = 0u; ri < RPT; ri++) {
      for (var m = 0u; m < MR; m++) { rstd[ri * MR + m] = r[m]; }
    }
    workgroupBarrier();                 // red is reused below
  }
  let rows = vec4<u32>(slot_row(row, N, 0u), slot_row(row, N, 1u), slot_row(row, N, 2u),
                       slot_row(row, N, 3u));
  var acc = vec4<f32>(0.0);
  if (STAGE) {
    let ntiles = (xs + TILE - 1u) / TILE;
    for (var t = 0u; t < ntiles; t++) {
      workgroupBarrier();                 // every lane is done with the previous tile
      stage_tile(t, lid, xs);
      workgroupBarrier();
      tile_c0 = t * TC;
      acc += walk(g, rows, tile_c0 + lane, min(nchunk, tile_c0 + TC), xs);
    }
  } else {
    acc = walk(g, rows, lane, nchunk, xs);
  }
  acc *= rstd;
  red[lid] = acc;
  workgroupBarrier();
  for (var step = TPR / 2u; step > 0u; step >>= 1u) {
    if (lane < step) { red[lid] += red[lid + step]; }
    workgroupBarrier();
  }
  out.tot = red[lid];
  return out;
}

// y_g[m, row] (+)= tot (+ bias[row]) for each of the slot's rows, by the slot's lane 0. Every
// load (bias, the accumulated y) is issued before any store: a store waits for its value, and
// a load after it in program order waits behind it (the compiler cannot move a load of y above
// a store to y), so loads interleaved with stores cost one memory latency per row.
fn store_rows(rs: RowSums) {
  if (rs.lane != 0u) { return; }
  var v = rs.tot;
  for (var ri = 0u; ri < RPT; ri++) {
    let row = min(rs.row + ri * (THREADS / TPR), rs.N - 1u);
    for (var m = 0u; m < MR; m++) {
      if ((p.flags & 1u) != 0u) { v[ri * MR + m] += bias[row]; }
      if ((p.flags & 2u) != 0u) { v[ri * MR + m] += yload(rs.g, m * rs.N + row); }
    }
  }
  for (var ri = 0u; ri < RPT; ri++) {
    let row = rs.row + ri * (THREADS / TPR);
    if (row >= rs.N) { break; }
    for (var m = 0u; m < MR; m++) { ystore(rs.g, m * rs.N + row, v[ri * MR + m]); }
  }
}

@compute @workgroup_size(THREADS)
fn matvec_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let rs = row_sums(wid, nwg, lid);
  if (rs.ok) { store_rows(rs); }
}

// Mamba decode: in_proj with the causal conv step and its SiLU folded into the store of the
// block the conv reads (W_CONV_G: Mamba-1's x half, Mamba-2's x|B|C block) -- one dispatch fewer
// per layer (no conv1d_step). The lane-0 thread of row j is the only writer of channel j's conv
// state, so it shifts the state in place and writes
//   y_g[m, j] = silu(conv_b[j] + sum_k conv_w[j, k] * s'[m, j, k]),  s' = [s[m, j, 1:], x_mj]
// where x_mj is the projection's value (+ bias) -- the same sum, in the same order, as
// conv1d_forward.wgsl's conv1d_step. The other blocks store as matvec_forward does.
// flags bit3: conv bias given. DCONV: the conv width (taps); CONV_G: the block it applies to.
//#include "lib/activations.wgsl"
override DCONV: u32 = 4u;
override CONV_G: u32 = 0u;
@group(0) @binding(10) var<storage, read> conv_w: array<f32>;        // [N, DCONV]
@group(0) @binding(11) var<storage, read> conv_b: array<f32>;        // [N] (bit3 of flags)
@group(0) @binding(12) var<storage, read_write> conv_s: array<f32>;  // [M, N, DCONV], in place

// The conv of one (x row m, channel j) with DCONV = 4 (every Mamba): its loads, all issued
// before the stores of any row (see store_rows), then its stores.
struct Conv4 { s: vec4<f32>, w: vec4<f32>, b: f32 };

fn conv4_load(m: u32, j: u32, N: u32, xv: f32) -> Conv4 {
  let base = (m * N + j) * 4u;
  var c: Conv4;
  c.s = vec4<f32>(conv_s[base + 1u], conv_s[base + 2u], conv_s[base + 3u], xv);   // s' = [s[1:], x]
  c.w = vec4<f32>(conv_w[j * 4u], conv_w[j * 4u + 1u], conv_w[j * 4u + 2u], conv_w[j * 4u + 3u]);
  c.b = 0.0;
  if ((p.flags & 8u) != 0u) { c.b = conv_b[j]; }
  return c;
}

fn conv4_store(c: Conv4, g: u32, m: u32, j: u32, N: u32) {
  let base = (m * N + j) * 4u;
  conv_s[base] = c.s.x;
  conv_s[base + 1u] = c.s.y;
  conv_s[base + 2u] = c.s.z;
  conv_s[base + 3u] = c.s.w;
  var acc = c.b;                          // conv1d_step's order: bias, then taps 0..3
  acc += c.s.x * c.w.x;
  acc += c.s.y * c.w.y;
  acc += c.s.z * c.w.z;
  acc += c.s.w * c.w.w;
  ystore(g, m * N + j, silu(acc));
}

@compute @workgroup_size(THREADS)
fn matvec_forward_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let rs = row_sums(wid, nwg, lid);
  if (!rs.ok) { return; }
  if (rs.g != CONV_G) { store_rows(rs); return; }
  if (rs.lane != 0u) { return; }
  let T = THREADS / TPR;
  if (DCONV == 4u) {
    // the thread's rows j_ri = row + ri * T (ri < RPT; past the end: row N-1, not stored), one
    // x row at a time: four rows' loads in flight together
    for (var m = 0u; m < MR; m++) {
      var xv = vec4<f32>(rs.tot[m], 0.0, 0.0, 0.0);
      if (RPT > 1u) { xv.y = rs.tot[MR + m]; }
      if (RPT > 2u) { xv.z = rs.tot[2u * MR + m]; xv.w = rs.tot[3u * MR + m]; }
      let j = min(vec4<u32>(rs.row) + vec4<u32>(0u, T, 2u * T, 3u * T), vec4<u32>(rs.N - 1u));
      if ((p.flags & 1u) != 0u) {
        xv += vec4<f32>(bias[j.x], bias[j.y], bias[j.z], bias[j.w]);
      }
      let c0 = conv4_load(m, j.x, rs.N, xv.x);
      var c1 = c0;
      var c2 = c0;
      var c3 = c0;
      if (RPT > 1u) { c1 = conv4_load(m, j.y, rs.N, xv.y); }
      if (RPT > 2u) { c2 = conv4_load(m, j.z, rs.N, xv.z); c3 = conv4_load(m, j.w, rs.N, xv.w); }
      if (rs.row < rs.N) { conv4_store(c0, rs.g, m, j.x, rs.N); }
      if (RPT > 1u && rs.row + T < rs.N) { conv4_store(c1, rs.g, m, j.y, rs.N); }
      if (RPT > 2u && rs.row + 2u * T < rs.N) { conv4_store(c2, rs.g, m, j.z, rs.N); }
      if (RPT > 2u && rs.row + 3u * T < rs.N) { conv4_store(c3, rs.g, m, j.w, rs.N); }
    }
    return;
  }
  for (var ri = 0u; ri < RPT; ri++) {     // another conv width: tap by tap
    let j = rs.row + ri * T;
    if (j >= rs.N) { break; }
    for (var m = 0u; m < MR; m++) {
      var xv = rs.tot[ri * MR + m];
      if ((p.flags & 1u) != 0u) { xv += bias[j]; }
      let base = (m * rs.N + j) * DCONV;
      var acc = 0.0;
      if ((p.flags & 8u) != 0u) { acc = conv_b[j]; }
      for (var k = 0u; k < DCONV; k++) {
        var v: f32;
        if (k + 1u < DCONV) { v = conv_s[base + k + 1u]; } else { v = xv; }
        conv_s[base + k] = v;
        acc += v * conv_w[j * DCONV + k];
      }
      ystore(rs.g, m * rs.N + j, silu(acc));
    }
  }
}
