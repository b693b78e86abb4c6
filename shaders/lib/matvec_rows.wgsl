// The weight-streaming mat-vec shared by shaders/matvec_<format>.wgsl (decode: M <= 4 rows).
//   y_g[m, j] (+)= sum_k x[m, k] * W_g[j, k] (+ bias[j])      g < G <= 3 matrices sharing x
// With flags bit2 the input is RMS-normalised first, x[m, k] -> x[m, k] * rstd[m] * nw[k]
// (rstd = 1/sqrt(mean_k x[m, k]^2 + eps)): a layer's pre-norm folded into its input
// projections, one dispatch fewer per layer when decoding (py_engine/ops/rmsnorm.NormedRows).
// Bandwidth-bound: each weight is read once per token in 16-byte chunks (vec4<u32>/vec4<f32>).
// TPR threads share a row (a pipeline override the host picks from K and N: 16..256) and each
// thread reads RPT rows (below), so a 256-thread workgroup covers 256/TPR * RPT rows;
// consecutive threads read consecutive chunks (coalesced), and the row's partial sums meet in a
// tree (lanes_sum below: workgroup memory, or with SG its steps below the subgroup size through
// subgroup shuffles, the same additions in the same order).
// Each including file starts with `enable subgroups;` (the kernel runs where the device has
// them: py_engine/ops/linear._matvec_ok).
// The including file defines, before this include:
//   const CV: u32       vec4s of values per 16-byte chunk (f32 1, f16/bf16 2, q8 4, q4 8)
//   alias Raw           the chunk as loaded (vec4<f32> or vec4<u32>)
//   fn load_raw(g: u32, row: u32, c: u32) -> Raw                chunk c of row `row`
//   fn raw_dot(q: Raw, xo: u32, no: u32) -> f32    its values (unscaled) dotted with the CV
//        vec4s xin(xo + i, no + i), i < CV, written out term by term
//   fn chunk_scale(g: u32, row: u32, c: u32) -> f32             their scale (1 when unscaled)
// and the weight bindings w (W_0 -> binding 2), w1 (binding 5), w2 (binding 6).
// Each thread issues four weight loads (a trip) before decoding any of them -- with one load in
// flight per thread the H200 read ~15-25% of its bandwidth (decode at the 1.4b shape) -- and, by
// PREFETCH (below), the first trip before the norm prologue and the next trip while summing one.

struct Params { M: u32, N: u32, K: u32, flags: u32,        // bit0 bias, bit1 accumulate, bit2 norm
                G: u32, N1: u32, N2: u32, eps: f32 };      // matrices; rows of W_1, W_2; norm eps

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;      // [M, K/4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [N] (bit0), or z [M, K] (GATED)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [M, N]
@group(0) @binding(7) var<storage, read_write> y1: array<f32>;      // [M, N1]
// binding 8, y2 [M, N2]: declared by the including file (lib/matvec_y2.wgsl, or
// lib/matvec_y2_words.wgsl where x_proj's shares are gathered), read and written through
// y2_get / y2_set
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
// row0 + s + ri * (THREADS / TPR), ri < RPT; a trip is U = 4 / RPT chunks of its RPT rows.
override RPT: u32 = 1u;
const THREADS = 256u;
var<workgroup> red: array<vec4<f32>, THREADS>;

// Whether the reductions' steps below the subgroup size run as subgroup shuffles instead of
// workgroup-memory steps (one barrier each): MAMBAWEB_MATVEC_SG, py_engine/ops/weight_format.py.
override SG: bool = false;

// The sum of v over each aligned group of L consecutive invocations (L a power of two, at most
// THREADS), in the group's first lane (the other lanes hold partial sums). The tree: step L/2,
// L/4, ... 1, lane l < step adding lane l + step. Steps of at least the subgroup size go through
// `red` (a barrier each); with SG the rest go through subgroupShuffleXor -- lane l adds lane
// l ^ step, which for l < step is l + step: the same additions in the same order, so the same
// bits (lanes past the step add too, unused). That needs subgroups of consecutive, aligned
// invocations, as every GPU we know forms them for a 1-D workgroup; tools/device_checks
// compares the two on the GPU. Called in uniform control flow (barriers; sg is uniform).
fn lanes_sum(v: vec4<f32>, lid: u32, L: u32, sg: u32) -> vec4<f32> {
  let lane = lid % L;
  var low = 1u;                           // steps >= low go through workgroup memory
  if (SG) { low = max(sg, 1u); }
  var step = L / 2u;
  var s = v;
  if (step >= low) {
    red[lid] = s;
    workgroupBarrier();
    for (; step >= low; step >>= 1u) {
      if (lane < step) { red[lid] += red[lid + step]; }
      workgroupBarrier();
    }
    s = red[lid];
  }
  if (SG) {
    for (; step > 0u; step >>= 1u) { s += subgroupShuffleXor(s, step); }
  }
  return s;
}

fn rows_of(g: u32) -> u32 {
  switch g { case 0u: { return n0(); } case 1u: { return p.N1; } default: { return p.N2; } }
}

fn ystore(g: u32, idx: u32, v: f32) {
  switch g { case 0u: { y[y0() + idx] = v; } case 1u: { y1[idx] = v; } default: { y2_set(idx, v); } }
}

fn yload(g: u32, idx: u32) -> f32 {
  switch g {
    case 0u: { return y[y0() + idx]; }
    case 1u: { return y1[idx]; }
    default: { return y2_get(idx); }
  }
}

// Packed pieces (matvec_forward_pieces, below): one dispatch for any number of row blocks
// that sit side by side in one buffer (binding 2), each a whole matrix of its format (rows,
// then its own scales), their outputs side by side in another (binding 4) -- Mamba-3's eight
// in_proj blocks (py_engine/ops/weight_pack.py) in one dispatch instead of three. Matrix 0 of
// the format's accessors is then the workgroup's piece: these say where it starts. A pipeline
// constant, so the other entry points fold the offsets to 0.
override PIECES: bool = false;
var<private> piece_w: u32;               // vec4 index of the piece's first word in binding 2
var<private> piece_y: u32;               // f32 index of its first output in binding 4
var<private> piece_n: u32;               // its rows
fn w0() -> u32 { if (PIECES) { return piece_w; } return 0u; }
fn y0() -> u32 { if (PIECES) { return piece_y; } return 0u; }
fn n0() -> u32 { if (PIECES) { return piece_n; } return p.N; }

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
  return v * gate_at(i);
}

// silu(z) of vec4 i of the gate (GATED: binding 3 holds z [M, K]), in x_at's form v * silu(z)
// = v * z / (1 + exp(-z)).
fn gate_at(i: u32) -> vec4<f32> {
  let zv = vec4<f32>(bias[4u * i], bias[4u * i + 1u], bias[4u * i + 2u], bias[4u * i + 3u]);
  return zv / (vec4<f32>(1.0) + exp(-zv));
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

// Tile t of x row 0 into xt (past K: zeros), times the norm weight when normalised; returns
// the sum of squares of the inputs this thread staged (before the norm weight: NORM_IN_STAGE).
fn stage_tile(t: u32, lid: u32, xs: u32) -> f32 {
  var ss = 0.0;
  for (var v = lid; v < TILE; v += THREADS) {
    let gi = t * TILE + v;
    var val = vec4<f32>(0.0);
    if (gi < xs && NORM_GROUPS > 0u) {
      val = grouped_val(gi);
    } else if (gi < xs) {
      val = x_at(gi);
      ss += dot(val, val);
      if (NORMED) { val *= nw[gi]; }
    }
    xt[(v % CV) * TC + v / CV] = val;
  }
  return ss;
}

// Norm groups (NORM_GROUPS > 0; with NORMED, STAGE, one x row, and NORM_IN_STAGE off): an RMSNorm
// over each group of NORM_GS4 vec4s of the row instead of the whole row -- Mamba-2's
// MambaRMSNormGated with n_groups > 1 (RMSNorm_g(y * silu(z)) * w, GATED) and Mamba-3's
// out-projection norm (GATE_AFTER_NORM: RMSNorm_g(y) * w * silu(z), a group a head) -- so their
// out_proj takes the norm and the gate too, one dispatch fewer a decoded layer. Each
// workgroup sums the groups' squares first (group_rstd: NORM_L lanes a group, one tree for
// all), and the staging multiplies each input by its group's 1/rms (grouped_val); the rows'
// sums then need none.
override NORM_GROUPS: u32 = 0u;
override NORM_GS4: u32 = 1u;             // vec4s a group
override NORM_L: u32 = 1u;               // lanes a group in group_rstd: a power of two, NORM_GROUPS * NORM_L <= THREADS
override GATE_AFTER_NORM: bool = false;
var<workgroup> grs: array<f32, THREADS>; // 1/rms of each group

// Input vec4 i before the grouped norm: y * silu(z) (GATED), or y when the gate comes after.
fn grouped_in(i: u32) -> vec4<f32> {
  if (GATE_AFTER_NORM) { return x4[i]; }
  return x_at(i);
}

// Input vec4 i normalised by its group (times the norm weight; the gate after with
// GATE_AFTER_NORM), as ops/gated_rmsnorm.py's kernels compute it.
fn grouped_val(i: u32) -> vec4<f32> {
  let v = grouped_in(i) * grs[i / NORM_GS4] * nw[i];
  if (GATE_AFTER_NORM) { return v * gate_at(i); }
  return v;
}

// grs[g] = 1/rms of group g: lanes [g NORM_L, (g + 1) NORM_L) sum its squares in one tree (lanes
// past the groups add zeros). Called in uniform control flow (barriers).
fn group_rstd(lid: u32, sg: u32) {
  let g = lid / NORM_L;
  let j = lid % NORM_L;
  var ss = 0.0;
  if (g < NORM_GROUPS) {
    for (var k = j; k < NORM_GS4; k += NORM_L) {
      let v = grouped_in(g * NORM_GS4 + k);
      ss += dot(v, v);
    }
  }
  let tot = lanes_sum(vec4<f32>(ss, 0.0, 0.0, 0.0), lid, NORM_L, sg);
  if (j == 0u && g < NORM_GROUPS) { grs[g] = inverseSqrt(tot.x / f32(4u * NORM_GS4) + p.eps); }
  workgroupBarrier();                     // grs is read by the staging; red is reused
}

// Where a normalised, staged x gets its sum of squares (a pipeline constant;
// MAMBAWEB_MATVEC_NORM_IN_STAGE, py_engine/ops/weight_format.py): false, a prologue reads x
// before the staging (one more memory wait and tree before any weight is summed); true, the
// staging's own loads square and add, and the tree runs after the rows' sums (1/rms multiplies
// the finished sums either way). A different order of the squares' additions: the same values
// to rounding, not bit for bit.
override NORM_IN_STAGE: bool = false;

// 1/rms per slot component (ri * MR + m) from each thread's partial sums of squares ss[m]:
// summed over the workgroup (lanes_sum), shared, and a barrier after (red is reused).
fn rstd_of(ss: vec4<f32>, lid: u32, sg: u32) -> vec4<f32> {
  let total = lanes_sum(ss, lid, THREADS, sg);
  if (SG) {                             // the total is in thread 0's registers: share it
    workgroupBarrier();                 // every lane is done reading red
    if (lid == 0u) { red[0] = total; }
    workgroupBarrier();
  }
  let r = inverseSqrt(red[0] / f32(p.K) + p.eps);
  var rstd = vec4<f32>(1.0);
  for (var ri = 0u; ri < RPT; ri++) {
    for (var m = 0u; m < MR; m++) { rstd[ri * MR + m] = r[m]; }
  }
  workgroupBarrier();                   // red is reused below
  return rstd;
}

// Load slot s < 4 of a thread's trip: row ri = s % RPT of its rows (clamped: past-the-end rows
// compute row N-1 and store nothing), chunk c + (s / RPT) * TPR. Plain arithmetic on pipeline
// constants, not arrays (see xin).
fn slot_row(row: u32, N: u32, s: u32) -> u32 { return min(row + (s % RPT) * (THREADS / TPR), N - 1u); }
fn slot_chunk(c: u32, s: u32) -> u32 { return c + (s / RPT) * TPR; }

// Load slot s's chunk (scale sc) dotted with each x row m, in component (s % RPT) * MR + m.
// The format's scale multiplies the chunk's dot product, not each value.
fn slot_sum(q: Raw, sc: f32, s: u32, cc: u32, xs: u32) -> vec4<f32> {
  var out = vec4<f32>(0.0);
  for (var m = 0u; m < MR; m++) {
    out[(s % RPT) * MR + m] = raw_dot(q, m * xs + cc * CV, cc * CV) * sc;
  }
  return out;
}

// One trip: four weight loads (U = 4 / RPT chunks of the thread's RPT rows) and their scales,
// all issued before any is used. Chunks are clamped into the row: the prefetch after a walk's
// last trip reads chunks it never uses rather than past the row.
struct Trip { q0: Raw, q1: Raw, q2: Raw, q3: Raw, s: vec4<f32> };

fn load_trip(g: u32, rows: vec4<u32>, c: u32, nchunk: u32) -> Trip {
  let c0 = min(slot_chunk(c, 0u), nchunk - 1u);
  let c1 = min(slot_chunk(c, 1u), nchunk - 1u);
  let c2 = min(slot_chunk(c, 2u), nchunk - 1u);
  let c3 = min(slot_chunk(c, 3u), nchunk - 1u);
  var t: Trip;
  t.q0 = load_raw(g, rows.x, c0);
  t.q1 = load_raw(g, rows.y, c1);
  t.q2 = load_raw(g, rows.z, c2);
  t.q3 = load_raw(g, rows.w, c3);
  t.s = vec4<f32>(chunk_scale(g, rows.x, c0), chunk_scale(g, rows.y, c1),
                  chunk_scale(g, rows.z, c2), chunk_scale(g, rows.w, c3));
  return t;
}

fn trip_sum(t: Trip, c: u32, xs: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  acc += slot_sum(t.q0, t.s.x, 0u, slot_chunk(c, 0u), xs);
  acc += slot_sum(t.q1, t.s.y, 1u, slot_chunk(c, 1u), xs);
  acc += slot_sum(t.q2, t.s.z, 2u, slot_chunk(c, 2u), xs);
  acc += slot_sum(t.q3, t.s.w, 3u, slot_chunk(c, 3u), xs);
  return acc;
}

// How a walk's last chunks (fewer than a trip's: up to U - 1 per row) load (a pipeline
// constant; MAMBAWEB_MATVEC_TAIL, py_engine/ops/weight_format.py): false, one chunk per row at a
// time, a loop whose runtime trip count keeps each load behind the previous one's sum -- a
// memory latency per chunk (mamba-130m's in_proj: three of them per thread, its only chunks);
// true, as one trip (its loads issued together, the slots past the walk's end neither loaded
// nor added). The kept slots are added to acc one by one in the loop's order: the same result
// bit for bit. Only the kept slots load: clamped loads of slots past the end (a
// first version) cost the q4 mat-vec more than the trip saved (1.4b q4 1.84 -> 1.92 ms a token,
// its out_proj's tiles leaving one chunk per row: two useless weight and scale loads). The norm
// prologue's x loads likewise (squares_by_trips, below).
override TAIL: bool = false;

// The slots of the trip at c whose chunks lie below c1, loaded together (the others zero).
fn load_tail(g: u32, rows: vec4<u32>, c: u32, c1: u32) -> Trip {
  var t: Trip;
  t.s = vec4<f32>(0.0);
  let c0 = slot_chunk(c, 0u);
  let c1s = slot_chunk(c, 1u);
  let c2 = slot_chunk(c, 2u);
  let c3 = slot_chunk(c, 3u);
  if (c0 < c1) { t.q0 = load_raw(g, rows.x, c0); t.s.x = chunk_scale(g, rows.x, c0); }
  if (c1s < c1) { t.q1 = load_raw(g, rows.y, c1s); t.s.y = chunk_scale(g, rows.y, c1s); }
  if (c2 < c1) { t.q2 = load_raw(g, rows.z, c2); t.s.z = chunk_scale(g, rows.z, c2); }
  if (c3 < c1) { t.q3 = load_raw(g, rows.w, c3); t.s.w = chunk_scale(g, rows.w, c3); }
  return t;
}

// acc plus trip t's slots whose chunks lie below c1, in slot order (the tail loop's order).
fn tail_sum(t: Trip, acc0: vec4<f32>, c: u32, c1: u32, xs: u32) -> vec4<f32> {
  var acc = acc0;
  if (slot_chunk(c, 0u) < c1) { acc += slot_sum(t.q0, t.s.x, 0u, slot_chunk(c, 0u), xs); }
  if (slot_chunk(c, 1u) < c1) { acc += slot_sum(t.q1, t.s.y, 1u, slot_chunk(c, 1u), xs); }
  if (slot_chunk(c, 2u) < c1) { acc += slot_sum(t.q2, t.s.z, 2u, slot_chunk(c, 2u), xs); }
  if (slot_chunk(c, 3u) < c1) { acc += slot_sum(t.q3, t.s.w, 3u, slot_chunk(c, 3u), xs); }
  return acc;
}

// The norm prologue's sums of squares of each x row m (component m), the thread's vec4s
// k = lid, lid + THREADS, ... four at a time: those inside the row loaded together, then added
// in k order -- the one-at-a-time loop's sums bit for bit, a memory wait per four vec4s
// instead of per vec4 (TAIL).
fn squares_by_trips(lid: u32, xs: u32) -> vec4<f32> {
  var ss = vec4<f32>(0.0);
  for (var k = lid; k < xs; k += 4u * THREADS) {
    let in1 = k + THREADS < xs;
    let in2 = k + 2u * THREADS < xs;
    let in3 = k + 3u * THREADS < xs;
    for (var m = 0u; m < MR; m++) {
      let v0 = x_at(m * xs + k);
      var v1 = vec4<f32>(0.0);
      var v2 = vec4<f32>(0.0);
      var v3 = vec4<f32>(0.0);
      if (in1) { v1 = x_at(m * xs + k + THREADS); }
      if (in2) { v2 = x_at(m * xs + k + 2u * THREADS); }
      if (in3) { v3 = x_at(m * xs + k + 3u * THREADS); }
      ss[m] += dot(v0, v0);
      if (in1) { ss[m] += dot(v1, v1); }
      if (in2) { ss[m] += dot(v2, v2); }
      if (in3) { ss[m] += dot(v3, v3); }
    }
  }
  return ss;
}

// When weights load (a pipeline constant; MAMBAWEB_MATVEC_PREFETCH, py_engine/ops/weight_format.py):
//   0  each trip as it is summed (1 and 2 measured slower on an H200, see
//      weight_format.prefetch_level);
//   1  also the first trip (and what the store adds: bias, accumulated y, the conv's taps) before
//      the norm prologue and the staging of x -- all ~512 workgroups start together, so without
//      it no weight byte moves until both are done;
//   2  also the next trip while the current one is summed (eight weight loads in flight);
//   3  only what the store adds (bias, accumulated y, the conv's taps) before the sums, the
//      weights as at 0: lane 0's few registers, not a trip's, held across the sums, and no
//      memory wait after the tree (the host's default: 1-3% less GPU time a token than 0).
//      (3 with 2's next trip loaded while summing, without 1's first trip early, measured
//      slower again: 1.4b f16 2.11 against 1.73 ms a token.)
// Every level adds the same sums in the same order (bit for bit where the compiler fuses the
// same multiply-adds: lavapipe's fuses some differently in the loops of levels 1 and 2,
// 1 ulp apart on normalised f16 rows; tests hold those to float64).
override PREFETCH: u32 = 0u;

// Whether the caller loads a walk's first trip (PREFETCH 1, 2).
fn first_trip_early() -> bool { return PREFETCH == 1u || PREFETCH == 2u; }

// The thread's sums over chunks c0, c0 + TPR, ... below c1 of its rows (rows: the four load
// slots' rows); `first`: the trip at c0 when the caller loaded it (first_trip_early).
fn walk(g: u32, rows: vec4<u32>, c0: u32, c1: u32, xs: u32, nchunk: u32, first: Trip) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  let U = 4u / RPT;                     // chunks per trip: U * RPT = 4 weight loads
  var c = c0;
  var cur = first;
  for (; c + (U - 1u) * TPR < c1; c += U * TPR) {
    if (!first_trip_early() || (PREFETCH == 1u && c != c0)) { cur = load_trip(g, rows, c, nchunk); }
    var next = cur;
    if (PREFETCH == 2u && c + (2u * U - 1u) * TPR < c1) {   // a whole next trip: load it now
      next = load_trip(g, rows, c + U * TPR, nchunk);
    }
    acc += trip_sum(cur, c, xs);
    cur = next;
  }
  if (TAIL && c < c1) {                  // the last chunks (fewer than a trip): one trip
    acc = tail_sum(load_tail(g, rows, c, c1), acc, c, c1, xs);
    c = c1;
  }
  for (; c < c1; c += TPR) {             // the last chunks: one per row (slots 0 .. RPT-1)
    acc += slot_sum(load_raw(g, rows.x, c), chunk_scale(g, rows.x, c), 0u, c, xs);
    if (RPT > 1u) { acc += slot_sum(load_raw(g, rows.y, c), chunk_scale(g, rows.y, c), 1u, c, xs); }
    if (RPT > 2u) {
      acc += slot_sum(load_raw(g, rows.z, c), chunk_scale(g, rows.z, c), 2u, c, xs);
      acc += slot_sum(load_raw(g, rows.w, c), chunk_scale(g, rows.w, c), 3u, c, xs);
    }
  }
  return acc;
}

// One workgroup's rows: lane 0 of each slot gets its rows' totals (tot[ri * MR + m]) after the
// tree.
struct RowSums { g: u32, N: u32, row: u32, lane: u32, tot: vec4<f32> };

fn first_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return (wid.x + wid.y * nwg.x) * (THREADS / TPR) * RPT;
}

// Whether the workgroup has rows of W_g (false past the end of a smaller W_g of a multi call).
// A plain bool, not a field of RowSums: WGSL's uniformity analysis judges a struct as a whole,
// and the thread's row and lane in it would make the test (and every barrier after it)
// non-uniform.
// (Its rows from Params, not rows_of: that reads piece_n, a private variable, which Tint's
// uniformity analysis takes as non-uniform even where PIECES is false.)
fn has_rows(wid: vec3<u32>, nwg: vec3<u32>) -> bool {
  var n = p.N;
  if (wid.z == 1u) { n = p.N1; } else if (wid.z > 1u) { n = p.N2; }
  return first_row(wid, nwg) < n;
}

fn row_slot(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowSums {
  var out: RowSums;
  out.g = wid.z;
  out.N = rows_of(out.g);
  out.row = first_row(wid, nwg) + lid / TPR;
  out.lane = lid % TPR;
  return out;
}

fn row_sums(slot: RowSums, lid: u32, sg: u32) -> RowSums {
  var out = slot;
  let g = out.g;
  let N = out.N;
  let row = out.row;
  let lane = out.lane;
  let xs = p.K / 4u;                    // vec4s per x row
  let nchunk = xs / CV;
  let rows = vec4<u32>(slot_row(row, N, 0u), slot_row(row, N, 1u), slot_row(row, N, 2u),
                       slot_row(row, N, 3u));
  var first: Trip;                      // loads while the norm prologue and the staging run
  if (first_trip_early()) { first = load_trip(g, rows, lane, nchunk); }
  var rstd = vec4<f32>(1.0);
  let late_norm = NORMED && STAGE && NORM_IN_STAGE;
  if (NORMED && NORM_GROUPS > 0u) {     // each group's 1/rms, applied while staging
    group_rstd(lid, sg);
  } else if (NORMED && !late_norm) {    // every workgroup computes the rows' 1/rms itself
    var ss = vec4<f32>(0.0);
    if (TAIL) { ss = squares_by_trips(lid, xs); } else {
      for (var k = lid; k < xs; k += THREADS) {
        for (var m = 0u; m < MR; m++) { let v = x_at(m * xs + k); ss[m] += dot(v, v); }
      }
    }
    rstd = rstd_of(ss, lid, sg);
  }
  var acc = vec4<f32>(0.0);
  if (STAGE) {
    let ntiles = (xs + TILE - 1u) / TILE;
    var ss = 0.0;
    for (var t = 0u; t < ntiles; t++) {
      if (first_trip_early() && t > 0u) { first = load_trip(g, rows, t * TC + lane, nchunk); }
      workgroupBarrier();                 // every lane is done with the previous tile
      ss += stage_tile(t, lid, xs);
      workgroupBarrier();
      tile_c0 = t * TC;
      acc += walk(g, rows, tile_c0 + lane, min(nchunk, tile_c0 + TC), xs, nchunk, first);
    }
    if (late_norm) { rstd = rstd_of(vec4<f32>(ss, 0.0, 0.0, 0.0), lid, sg); }
  } else {
    acc = walk(g, rows, lane, nchunk, xs, nchunk, first);
  }
  acc *= rstd;
  out.tot = lanes_sum(acc, lid, TPR, sg);
  return out;
}

// What lane 0 of a slot adds to its rows' totals: bias[row] (flags bit0) and the y it
// accumulates into (bit1), per (ri, m) component. Loaded before the rows' sums (PREFETCH >= 1:
// the store after the tree waits on no memory); kept apart and added in the order bias, then y,
// as before: the same result bit for bit.
struct Addends { b: vec4<f32>, y: vec4<f32> };

fn addends_load(rs: RowSums) -> Addends {
  var e: Addends;
  e.b = vec4<f32>(0.0);
  e.y = vec4<f32>(0.0);
  if (rs.lane == 0u) {                  // no early return: callers sit before barriers
    for (var ri = 0u; ri < RPT; ri++) {
      let row = min(rs.row + ri * (THREADS / TPR), rs.N - 1u);
      for (var m = 0u; m < MR; m++) {
        if ((p.flags & 1u) != 0u) { e.b[ri * MR + m] = bias[row]; }
        if ((p.flags & 2u) != 0u) { e.y[ri * MR + m] = yload(rs.g, m * rs.N + row); }
      }
    }
  }
  return e;
}

// y_g[m, row] (+)= tot (+ bias[row]) for each of the slot's rows, by the slot's lane 0.
fn store_rows(rs: RowSums, e: Addends) {
  if (rs.lane != 0u) { return; }
  var v = rs.tot;
  if ((p.flags & 1u) != 0u) { v += e.b; }
  if ((p.flags & 2u) != 0u) { v += e.y; }
  for (var ri = 0u; ri < RPT; ri++) {
    let row = rs.row + ri * (THREADS / TPR);
    if (row >= rs.N) { break; }
    for (var m = 0u; m < MR; m++) { ystore(rs.g, m * rs.N + row, v[ri * MR + m]); }
  }
}

@compute @workgroup_size(THREADS)
fn matvec_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  if (!has_rows(wid, nwg)) { return; }  // uniform per workgroup
  let slot = row_slot(wid, nwg, lid);             // uniform per workgroup (a smaller W_g of a multi call)
  var e: Addends;
  if (PREFETCH >= 1u) { e = addends_load(slot); }
  let rs = row_sums(slot, lid, sg);
  if (PREFETCH == 0u) { e = addends_load(rs); }
  store_rows(rs, e);
}

// Mamba decode: in_proj with the causal conv step and its SiLU folded into the store of the
// block the conv reads (W_CONV_G: Mamba-1's x half, Mamba-2's x|B|C block) -- one dispatch fewer
// per layer (no conv1d_step). The lane-0 thread of row j is the only writer of channel j's conv
// state, so it shifts the state in place and writes
//   y_g[m, j] = silu(conv_b[j] + sum_k conv_w[j, k] * s'[m, j, k]),  s' = [s[m, j, 1:], x_mj]
// where x_mj is the projection's value (+ bias) -- the same sum, in the same order, as
// conv1d_forward.wgsl's conv1d_step. The other blocks store as matvec_forward does.
// flags bit3: conv bias given. DCONV: the conv width (taps); CONV_G: the block it applies to.
// The conv's weight [N, DCONV] and bias [N] come through the norm weight's binding `nw`, packed
// after it at load (nn's decode_param_packs: the layer's norm weight, conv1d.weight,
// conv1d.bias side by side), at element offsets CONV_WO and CONV_BO of that binding (the same
// for every layer of a model: one pipeline); without the norm the binding starts at the conv
// weight. Each had a binding of its own until the thirty-fourth session: 12 storage bindings,
// over the 10 a Mac's Chrome gives, so a Mac decoded with the separate conv step. Now 10.
//#include "lib/activations.wgsl"
override DCONV: u32 = 4u;
override CONV_G: u32 = 0u;
override CONV_WO: u32 = 0u;              // a multiple of 4 (the pack's offsets are 256-byte aligned)
override CONV_BO: u32 = 0u;
@group(0) @binding(12) var<storage, read_write> conv_s: array<f32>;  // [M, N, DCONV], in place

fn conv_w_at(i: u32) -> f32 { let e = CONV_WO + i; return nw[e >> 2u][e & 3u]; }
fn conv_b_at(j: u32) -> f32 { let e = CONV_BO + j; return nw[e >> 2u][e & 3u]; }

// The conv of one slot component k = ri * MR + m (x row m, channel j = row + ri * THREADS/TPR)
// with DCONV = 4 (every Mamba): the state's last three taps, the conv weights and bias, loaded
// by lane 0 before the rows' sums (with the addends: no memory wait after the tree); the
// projection's value x_mj becomes the fourth tap once summed.
struct Conv4 { s: vec4<f32>, w: vec4<f32>, b: f32 };

fn conv4_load(rs: RowSums, k: u32) -> Conv4 {
  var c: Conv4;
  if (rs.lane == 0u && k < RPT * MR) {  // no early return: callers sit before barriers
    let m = k % MR;
    let j = min(rs.row + (k / MR) * (THREADS / TPR), rs.N - 1u);
    let base = (m * rs.N + j) * 4u;
    c.s = vec4<f32>(conv_s[base + 1u], conv_s[base + 2u], conv_s[base + 3u], 0.0);  // s' = [s[1:], x]
    c.w = nw[(CONV_WO >> 2u) + j];        // conv_w[j, 0..3]: one vec4
    if ((p.flags & 8u) != 0u) { c.b = conv_b_at(j); }
  }
  return c;
}

// The conv block's four components (named fields, not an array: registers), loaded where the
// workgroup's block is the conv's and DCONV = 4; zeros elsewhere (unused there).
struct ConvTaps { c0: Conv4, c1: Conv4, c2: Conv4, c3: Conv4 };

fn conv_taps_load(rs: RowSums) -> ConvTaps {
  var t: ConvTaps;
  if (DCONV == 4u && rs.g == CONV_G) {
    t.c0 = conv4_load(rs, 0u);
    t.c1 = conv4_load(rs, 1u);
    t.c2 = conv4_load(rs, 2u);
    t.c3 = conv4_load(rs, 3u);
  }
  return t;
}

// Component k's shifted state and silu(conv) stored, its value xv the fourth tap; returns the
// stored silu(conv) (past the end of W_g: nothing stored, 0 returned).
fn conv4_store(rs: RowSums, k: u32, cin: Conv4, xv: f32) -> f32 {
  if (k >= RPT * MR) { return 0.0; }
  let m = k % MR;
  let j = rs.row + (k / MR) * (THREADS / TPR);
  if (j >= rs.N) { return 0.0; }
  var c = cin;
  c.s.w = xv;
  let base = (m * rs.N + j) * 4u;
  conv_s[base] = c.s.x;
  conv_s[base + 1u] = c.s.y;
  conv_s[base + 2u] = c.s.z;
  conv_s[base + 3u] = c.s.w;
  var acc = c.b;                          // conv1d_step's order: bias, then taps 0..3
  acc += c.s.x * c.w.x;
  acc += c.s.y * c.w.y;
  acc += c.s.z * c.w.z;
  acc += c.s.w * c.w.w;
  let out = silu(acc);
  ystore(rs.g, m * rs.N + j, out);
  return out;
}

// A conv entry point's rows' sums, with what its store adds: the addends and the conv's taps,
// loaded before the sums from PREFETCH 1 on. Called in uniform control flow (barriers).
struct ConvSums { rs: RowSums, e: Addends, taps: ConvTaps };

fn conv_sums(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sg: u32) -> ConvSums {
  let slot = row_slot(wid, nwg, lid);
  var out: ConvSums;
  if (PREFETCH >= 1u) { out.e = addends_load(slot); out.taps = conv_taps_load(slot); }
  out.rs = row_sums(slot, lid, sg);
  if (PREFETCH == 0u) { out.e = addends_load(out.rs); out.taps = conv_taps_load(out.rs); }
  return out;
}

@compute @workgroup_size(THREADS)
fn matvec_forward_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  if (!has_rows(wid, nwg)) { return; }  // uniform per workgroup
  let cs = conv_sums(wid, nwg, lid, sg);
  let rs = cs.rs;
  let e = cs.e;
  let taps = cs.taps;
  if (rs.g != CONV_G) { store_rows(rs, e); return; }
  if (rs.lane != 0u) { return; }
  let T = THREADS / TPR;
  if (DCONV == 4u) {
    var xv = rs.tot;                      // x_mj = the projection's value (+ bias)
    if ((p.flags & 1u) != 0u) { xv += e.b; }
    _ = conv4_store(rs, 0u, taps.c0, xv.x);
    _ = conv4_store(rs, 1u, taps.c1, xv.y);
    _ = conv4_store(rs, 2u, taps.c2, xv.z);
    _ = conv4_store(rs, 3u, taps.c3, xv.w);
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
      if ((p.flags & 8u) != 0u) { acc = conv_b_at(j); }
      for (var k = 0u; k < DCONV; k++) {
        var v: f32;
        if (k + 1u < DCONV) { v = conv_s[base + k + 1u]; } else { v = xv; }
        conv_s[base + k] = v;
        acc += v * conv_w_at(j * DCONV + k);
      }
      ystore(rs.g, m * rs.N + j, silu(acc));
    }
  }
}

// Row blocks packed side by side (PIECES above): the grid's workgroups walk the pieces in
// order, piece i taking workgroups [first_i, first_i + ceil(rows_i / rows a workgroup)); each
// workgroup is then matvec_forward's over its piece (no bias, no accumulate: the host refuses
// them). head = (pieces, workgroups in all, 0, 0); e[i] = (first_i, rows_i, the piece's first
// vec4 in binding 2, its first output in binding 4) -- output row m of piece i at
// y[e[i].w + m * rows_i + j], so each piece's [M, rows_i] output is a tensor of its own.
const MAX_PIECES = 8u;
struct PieceTable { head: vec4<u32>, e: array<vec4<u32>, 8> };     // 8: MAX_PIECES
@group(0) @binding(15) var<uniform> pt: PieceTable;

@compute @workgroup_size(THREADS)
fn matvec_forward_pieces(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  let f = wid.x + wid.y * nwg.x;          // uniform per workgroup, as is all that follows from it
  if (f >= pt.head.y) { return; }         // past the last piece (the grid is folded into 2-D)
  var i = 0u;
  for (var j = 1u; j < min(pt.head.x, MAX_PIECES); j++) {
    if (pt.e[j].x <= f) { i = j; }
  }
  let e = pt.e[i];
  piece_n = e.y;
  piece_w = e.z;
  piece_y = e.w;
  var slot: RowSums;
  slot.g = 0u;
  slot.N = e.y;
  slot.row = (f - e.x) * (THREADS / TPR) * RPT + lid / TPR;
  slot.lane = lid % TPR;
  var a: Addends;
  if (PREFETCH >= 1u) { a = addends_load(slot); }
  let rs = row_sums(slot, lid, sg);
  if (PREFETCH == 0u) { a = addends_load(rs); }
  store_rows(rs, a);
}
