// The weight-streaming mat-vec shared by shaders/matvec_<format>.wgsl (decode: M <= 4 rows).
//   y_g[m, j] (+)= sum_k x[m, k] * W_g[j, k] (+ bias[j])      g < G <= 3 matrices sharing x
// With flags bit2 the input is RMS-normalised first, x[m, k] -> x[m, k] * rstd[m] * nw[k]
// (rstd = 1/sqrt(mean_k x[m, k]^2 + eps)): a layer's pre-norm folded into its input
// projections, one dispatch fewer per layer when decoding (py_engine/ops/rmsnorm.NormedRows).
// Bandwidth-bound: each weight is read once per token in 16-byte chunks (vec4<u32>/vec4<f32>).
// TPR threads share a row (a pipeline override the host picks from K: 64..256) so a 256-thread
// workgroup covers 256/TPR rows; consecutive threads read consecutive chunks (coalesced), and
// the row's partial sums meet in a shared-memory tree (no subgroup op: correct whatever the
// subgroup size, and the reduction is a small part of the row's reads).
// The including file defines, before this include:
//   const CV: u32       vec4s of values per 16-byte chunk (f32 1, f16/bf16 2, q8 4, q4 8)
//   alias Raw           the chunk as loaded (vec4<f32> or vec4<u32>)
//   fn load_raw(g: u32, row: u32, c: u32) -> Raw                        chunk c of row `row`
//   fn decode(q: Raw, g: u32, row: u32, c: u32) -> array<vec4<f32>, CV>  its values (scaled)
// Each thread issues the loads of four chunks before decoding any of them: with one load in
// flight per thread the H200 read ~15-25% of its bandwidth (decode at the 1.4b shape).
// and the weight bindings w (1 -> binding 2), w1 (binding 5), w2 (binding 6).

struct Params { M: u32, N: u32, K: u32, flags: u32,        // bit0 bias, bit1 accumulate, bit2 norm
                G: u32, N1: u32, N2: u32, eps: f32 };      // matrices; rows of W_1, W_2; norm eps

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;      // [M, K/4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [N] (bit0 of flags)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [M, N]
@group(0) @binding(7) var<storage, read_write> y1: array<f32>;      // [M, N1]
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;      // [M, N2]
@group(0) @binding(9) var<storage, read> nw: array<vec4<f32>>;      // [K/4] norm weight (bit2)

override TPR: u32 = 64u;
// x rows M as a pipeline constant, not read from Params: with a constant trip count the
// per-row loops unroll and acc[m] / out[m] index registers, where a runtime M left them
// dynamically indexed (local memory on some compilers).
override MR: u32 = 1u;
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

// The chunk's values dotted with the same 4*CV inputs of each x row m < M (normalised: * nw).
fn chunk_dot(wv: array<vec4<f32>, CV>, c: u32, xs: u32, normed: bool) -> vec4<f32> {
  var out = vec4<f32>(0.0);
  for (var m = 0u; m < MR; m++) {
    let xo = m * xs + c * CV;
    var s = 0.0;
    if (normed) {
      for (var i = 0u; i < CV; i++) { s += dot(wv[i], x4[xo + i] * nw[c * CV + i]); }
    } else {
      for (var i = 0u; i < CV; i++) { s += dot(wv[i], x4[xo + i]); }
    }
    out[m] = s;
  }
  return out;
}

// Row sums of one workgroup's rows: every lane gets its row's total (tot, in red[row slot]) after
// the tree; `ok` is false for a workgroup past the end of W_g (uniform per workgroup).
struct RowSums { g: u32, N: u32, row: u32, lane: u32, tot: vec4<f32>, ok: bool };

fn row_sums(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowSums {
  var out: RowSums;
  let g = wid.z;
  let N = rows_of(g);
  out.g = g;
  out.N = N;
  let row0 = (wid.x + wid.y * nwg.x) * (THREADS / TPR);
  out.ok = row0 < N;
  if (!out.ok) { return out; }          // uniform per workgroup (a smaller W_g of a multi call)
  let row = row0 + lid / TPR;
  let lane = lid % TPR;
  out.row = row;
  out.lane = lane;
  let r = min(row, N - 1u);             // past-the-end rows compute row N-1 and store nothing
  let xs = p.K / 4u;                    // vec4s per x row
  let nchunk = xs / CV;
  let normed = (p.flags & 4u) != 0u;
  var rstd = vec4<f32>(1.0);
  if (normed) {                         // every workgroup computes the rows' 1/rms itself
    var ss = vec4<f32>(0.0);
    for (var k = lid; k < xs; k += THREADS) {
      for (var m = 0u; m < MR; m++) { let v = x4[m * xs + k]; ss[m] += dot(v, v); }
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var step = THREADS / 2u; step > 0u; step >>= 1u) {
      if (lid < step) { red[lid] += red[lid + step]; }
      workgroupBarrier();
    }
    rstd = inverseSqrt(red[0] / f32(p.K) + p.eps);
    workgroupBarrier();                 // red is reused below
  }
  var acc = vec4<f32>(0.0);             // one partial sum per x row m < M <= 4
  var c = lane;
  for (; c + 3u * TPR < nchunk; c += 4u * TPR) {
    let q0 = load_raw(g, r, c);
    let q1 = load_raw(g, r, c + TPR);
    let q2 = load_raw(g, r, c + 2u * TPR);
    let q3 = load_raw(g, r, c + 3u * TPR);
    acc += chunk_dot(decode(q0, g, r, c), c, xs, normed);
    acc += chunk_dot(decode(q1, g, r, c + TPR), c + TPR, xs, normed);
    acc += chunk_dot(decode(q2, g, r, c + 2u * TPR), c + 2u * TPR, xs, normed);
    acc += chunk_dot(decode(q3, g, r, c + 3u * TPR), c + 3u * TPR, xs, normed);
  }
  for (; c < nchunk; c += TPR) {
    acc += chunk_dot(decode(load_raw(g, r, c), g, r, c), c, xs, normed);
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

// y_g[m, row] (+)= tot[m] (+ bias[row]) for the row's lane 0.
fn store_rows(rs: RowSums) {
  if (rs.lane != 0u || rs.row >= rs.N) { return; }
  for (var m = 0u; m < MR; m++) {
    var v = rs.tot[m];
    if ((p.flags & 1u) != 0u) { v += bias[rs.row]; }
    let idx = m * rs.N + rs.row;
    if ((p.flags & 2u) != 0u) { v += yload(rs.g, idx); }
    ystore(rs.g, idx, v);
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

@compute @workgroup_size(THREADS)
fn matvec_forward_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let rs = row_sums(wid, nwg, lid);
  if (!rs.ok) { return; }
  if (rs.g != CONV_G) { store_rows(rs); return; }
  if (rs.lane != 0u || rs.row >= rs.N) { return; }
  let j = rs.row;
  for (var m = 0u; m < MR; m++) {
    var xv = rs.tot[m];
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
