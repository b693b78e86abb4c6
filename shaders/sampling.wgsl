// Next-token sampling on the GPU: logits [rows, V] -> one u32 token id per row.
//
// HuggingFace semantics (generate's logits processors, in their order):
//   repetition penalty : for every token in the row's history, l = l < 0 ? l * pen : l / pen
//                        (applied once per token however often it occurs)
//   greedy             : argmax of the penalised logits, lowest index on ties (torch.argmax)
//   temperature        : x = l * (1 / temperature), the reciprocal rounded once on the host
//                        (Params.inv_temp): every pass and kernel computes the same x from the
//                        same l (a division may be compiled differently at each use -- Vulkan
//                        allows 2.5 ULP -- and a value recomputed one ULP lower between the
//                        top-k count and the keep pass fell out of the kept set; a product is
//                        rounded correctly everywhere)
//   top-k              : keep x >= the k-th largest x (ties at the threshold kept, as HF)
//   top-p (nucleus)    : over the top-k survivors' softmax, keep token v iff the probability
//                        mass of tokens *strictly above* x_v is < p (HF TopPLogitsWarper: sort
//                        ascending, drop cumulative <= 1 - p); the top token is always kept
//   sample             : Gumbel-max, argmax over kept v of x_v + G_v, G_v = -log(-log(U_v)),
//                        which draws v with probability softmax(x) renormalised over the kept
//                        set. U_v is a counter-based hash of (seed, step, row, v): the same
//                        (seed, step) gives the same ids, with no RNG state to carry.
// The step counter and the history lengths live in a small u32 storage buffer `ctl`
// ([step, count_0, count_1, ...]) the caller updates with writeBuffer, so a recorded decode
// graph replays unchanged.
//
// Thresholds are found without sorting, by radix selection over order-preserving u32 keys of
// x (key(a) < key(b) iff a < b):
//   top-k: 4 passes of 8-bit digits, counts in 256 workgroup atomic<u32> bins (integer, so
//          order-independent); the exact k-th largest key.
//   top-p: 8 passes of 4-bit digits, softmax mass per bin from per-thread private histograms
//          summed in a fixed order (no float atomics: deterministic); finds the largest key
//          kappa with mass(key >= kappa) >= p * Z.
// Entry points:
//   (the repetition penalty: penalise_slice, by whichever kernel first reads a slice of the
//   row -- sampling_candidates, sampling_greedy_part, the first of the passes
//   (sampling_topk_pass, sampling_topp_pass or sampling_max_pass), or sampling_penalise, which
//   writes the penalised row to scratch for a draw that walks it in one workgroup)
//   sampling_sample   one 128-thread workgroup per row; passes over V: 1 (max) + 4 (top-k)
//                     + 1 (Z) + 8 (top-p) + 1 (draw) at most; with top-k, 1 (max) + 4
//                     + 1 (each thread keeps its values at or above the threshold), the
//                     later passes walking those lists (KEEP_LISTS).
//   sampling_candidates  with top-k (SPREAD): one workgroup per slice of 8 WG logits writes
//                     the slice's values at or above its own k-th largest; sampling_sample
//                     then walks those candidates instead of the row (below, at SPREAD).
//                     Top-p alone takes each slice's top 128 and its mass (TOP-P ALONE):
//                     the draw walks them where the top-p set is among them, else the row.
//   sampling_topk_pass, sampling_topp_pass, sampling_max_pass, sampling_slices_draw
//                     top-p alone, top-k past 128 and plain temperature over the whole row
//                     spread over the GPU (TOP-P PASSES, at the end): top-k's four digit
//                     passes, top-p's eight (or, with neither, each slice's max), the draw,
//                     one workgroup a slice each, then sampling_greedy_final picks the best of
//                     the slices' draws.
//   sampling_greedy_part, sampling_greedy_final
//                     greedy in two dispatches: GP workgroups per row each take the argmax of
//                     their slices of the row, then one workgroup per row picks among those
//                     GP candidates. One workgroup scanning a 50k vocabulary took 130-220 us
//                     per token on an H200 (tools/profile_kernels.py), as long as a 1.4b
//                     layer's weights; spread over the GPU it is two short dispatches.
// With ADVANCE (a pipeline constant) the dispatch that writes out[row] -- sampling_sample or
// sampling_greedy_final -- also does decode_control.wgsl's work (advance_after below): one
// dispatch fewer a decoded token for every family (py_engine/ops/sampling.sample's `advance`).

//#include "lib/decode_counters.wgsl"

override WG: u32 = 128u;    // threads per row (a pipeline constant: 32 for small V, 128 above)
override KEEP_LISTS: bool = true;   // sampling_sample's kept lists (KEPT below); false: tests
override PROBE: bool = false;       // tests: sampling_sample writes (lists used, candidates
                                    // used) at cand[row], with SPREAD after the slices' counts
override SPREAD: bool = false;      // sampling_sample reads sampling_candidates' candidates
override KC: u32 = 48u;             // candidate slots a slice (>= top_k + ties; host's rule)
override PENALISE: bool = false;    // sampling_candidates / _greedy_part penalise their slices
override SLICE_Z: bool = false;     // sampling_candidates also writes its slice's (max, mass):
                                    // top-p alone spread (TOP-P ALONE below)
const GREEDY = 1u;
const PENALISED = 2u;   // sampling_sample reads the penalised row in scratch (greedy: PENALISE)
const TOP_K = 4u;
const TOP_P = 8u;

struct Params {
  V: u32, rows: u32, flags: u32, top_k: u32,
  top_p: f32, temperature: f32, penalty: f32, seed: u32,
  hist_cap: u32, l_off: u32, l_str: u32, _p0: u32,    // _p0: greedy's GP, a draw's SP
  pos_count: u32, ring_len: u32, inv_temp: f32, inv_pen: f32,  // ADVANCE: positions, ring
                                                               // length R; 1/t, 1/penalty
  pass_i: u32, _p1: u32, _p2: u32, _p3: u32,   // the pass of sampling_topk_pass / _topp_pass
};

// ctl and hist are written only with ADVANCE; the other entry points read them.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;  // [step, count_0, count_1, ...]
@group(0) @binding(3) var<storage, read_write> hist: array<u32>; // [rows, hist_cap]
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;  // [rows, V]
@group(0) @binding(5) var<storage, read_write> out: array<u32>;  // [rows]
@group(0) @binding(6) var<storage, read_write> cand: array<vec2<u32>>;  // (value bits, index):
                                 // greedy [rows, GP]; a draw's top-k candidates [rows, SP, KC]
                                 // then each slice's (count, threshold key) [rows, SP] and
                                 // (max, mass) [rows, SP] (SPREAD below), then PROBE's [rows];
                                 // without SPREAD, PROBE's [rows] alone
// (8 storage bindings at most an entry point: WebGPU's default limit)
@group(0) @binding(7) var<storage, read_write> pos: array<u32>;  // [pos_count] (ADVANCE)
@group(0) @binding(8) var<storage, read_write> ring: array<u32>; // [2 * ring_len] (ADVANCE)

// Whether the dispatch that chooses the ids also advances the decode's counters (the host
// binds scratch buffers at 3, 7 and 8 when it does not: rw_dummy).
override ADVANCE: bool = false;

// The decode's counters (lib/decode_counters.wgsl), by the thread that chose row `row`'s id
// `tok` (lid 0 of the row's workgroup): the row's history; row 0's workgroup also the ring, the
// step counter and the positions. A draw's dispatch reads ctl[0] (its seed): sampling_sample
// is such a dispatch, so the host folds this into it for one row only (another row's
// workgroup could still be drawing); sampling_greedy_final reads no counter but the ones this
// writes (its own row's, and ctl[0] in row 0's), the draw before it having read ctl[0] a
// dispatch earlier, so the host folds it there for any number of rows.
fn advance_after(row: u32, tok: u32) {
  count_row(row, tok);
  if (row == 0u) { count_step(tok); }
}

// out[row] = tok, and with ADVANCE the counters (lid 0 only; after every thread's reads of ctl).
fn put_id(row: u32, lid: u32, tok: u32) {
  if (lid == 0u) {
    out[row] = tok;
    if (ADVANCE) { advance_after(row, tok); }
  }
}

var<workgroup> bins: array<atomic<u32>, 256>;
var<workgroup> part: array<f32, 16 * WG>;    // 16 bins x WG threads (top-p), WG values, or
                                            // a slice's 8 WG penalised logits (PENALISE)
var<workgroup> part_i: array<u32, WG>;
var<workgroup> sel: array<u32, 2>;          // chosen digit, remaining count
var<workgroup> self_f: array<f32, 2>;       // above mass / Z
var<workgroup> kept_over: atomic<u32>;      // some thread flagged (flag_clear / flag_any): a
var<workgroup> kept_all: u32;               // kept list overflowed, or a slice did not fit

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// ------------------------------------------------------------------------------------------

// HF's repetition penalty, l < 0 ? l * pen : l / pen -- the division as a product with the
// reciprocal rounded on the host (Params.inv_pen): one rounding for every kernel that
// penalises (penalise_slice below; see inv_temp above).
fn penalised(l: f32) -> f32 { return select(l * p.inv_pen, l * p.penalty, l < 0.0); }

// ------------------------------------------------------------------------------------------

fn logit(row: u32, v: u32) -> f32 {
  if (has(PENALISED)) { return scratch[row * p.V + v]; }
  return logits[p.l_off + row * p.l_str + v];
}

// A NaN, by its bits. The float test `!(x == x)` did not keep a NaN logit out of the
// one-workgroup draw on the H200 (through Dawn and natively: it counted as the largest key and
// was drawn at every step; tests/browser/sampling_passes_cases.py), where lavapipe kept it out
// -- compilers may fold a float self-comparison where they assume no NaN, and naga emits
// `x != x` as an ordered comparison (false for a NaN). An integer test cannot be folded.
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7FFFFFFFu) > 0x7F800000u; }

fn key_of(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b ^ 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// PCG hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Whether any thread of the workgroup flagged something (kept_over): flag_clear, then threads
// atomicStore(&kept_over, 1u), then flag_any. Uniform control flow; flag_any's answer is uniform.
fn flag_clear(lid: u32) {
  if (lid == 0u) { atomicStore(&kept_over, 0u); }
  workgroupBarrier();
}

fn flag_any(lid: u32) -> bool {
  workgroupBarrier();
  if (lid == 0u) { kept_all = atomicLoad(&kept_over); }
  return workgroupUniformLoad(&kept_all) != 0u;
}

// -- the passes of sampling_sample over a row's x = logit * (1 / temperature) ---------------
// Each pass visits v = lid, lid + WG, lid + 2 WG, ... in that order (the float sums depend on
// it), eight values a step of the sweep, whose eight loads are issued before any is used: with
// one load in flight a thread, each of up to 15 passes of this one-workgroup kernel waited on
// memory for every value (one such pass over 50,280 logits took 130-220 us on an H200 when
// greedy ran this way). What a pass does with a value (visit) reads its parameters from, and
// adds into, the private variables below.
const PASS_MAX = 0u;       // the largest x
const PASS_TOPK = 1u;      // counts of the 8-bit digit at pv_shift of the keys under pv_prefix
const PASS_Z = 2u;         // the mass exp(x - m) of the keys >= pv_tau
const PASS_TOPP = 3u;      // that mass by 4-bit digit, under pv_prefix
const PASS_DRAW = 4u;      // Gumbel-max over the keys >= pv_tau
const PASS_KEEP = 5u;      // the values with keys >= pv_tau into the thread's kept list
// After top-k, the later passes (top-p's nine, the draw) see only the values at or above its
// threshold: about k of the row's V. Each thread keeps its own (at most KEPT, in the order it
// visits them, so its sums are the same as a full pass's) and the later passes walk those
// lists instead of the row; if any thread has more (ties, or a k much larger than the
// workgroup), every pass walks the row as before.
const KEPT = 8u;
var<private> kept_x: array<f32, KEPT>;
var<private> kept_v: array<u32, KEPT>;
var<private> kept_n: u32;
var<private> use_kept: bool;
var<private> use_cand: bool;
var<private> acc_m: f32;
var<private> acc_z: f32;
var<private> acc_h: array<f32, 16>;
var<private> acc_best: f32;
var<private> acc_bi: u32;
var<private> pv_shift: u32;
var<private> pv_mask: u32;
var<private> pv_prefix: u32;
var<private> pv_tau: u32;
var<private> pv_m: f32;
var<private> pv_k1: u32;
var<private> pv_k2: u32;

fn visit(kind: u32, x: f32, v: u32) {
  // past the row (a clamped load), or a NaN logit (is_nan)
  if (v >= p.V || is_nan(x)) { return; }
  switch kind {
    case 0u: { acc_m = max(acc_m, x); }
    case 1u: {
      let key = key_of(x);
      if ((key & pv_mask) == pv_prefix) { atomicAdd(&bins[(key >> pv_shift) & 255u], 1u); }
    }
    case 2u: { if (key_of(x) >= pv_tau) { acc_z += exp(x - pv_m); } }
    case 3u: {
      let key = key_of(x);
      if (key >= pv_tau && (key & pv_mask) == pv_prefix) {
        acc_h[(key >> pv_shift) & 15u] += exp(x - pv_m);
      }
    }
    case 5u: {
      if (key_of(x) >= pv_tau) {
        if (kept_n < KEPT) {
          kept_x[kept_n] = x;
          kept_v[kept_n] = v;
          kept_n += 1u;
        } else {
          atomicStore(&kept_over, 1u);
        }
      }
    }
    default: {
      if (key_of(x) >= pv_tau) {
        let hsh = pcg(pcg(v + pv_k1) ^ pv_k2);
        let u = (f32(hsh >> 8u) + 0.5) * (1.0 / 16777216.0);
        let s = (x - pv_m) - log(-log(u));
        if (beats(s, v, acc_best, acc_bi)) { acc_best = s; acc_bi = v; }   // lowest index on ties
      }
    }
  }
}

fn xv(row: u32, v: u32) -> f32 { return logit(row, min(v, p.V - 1u)) * p.inv_temp; }

fn sweep(row: u32, lid: u32, kind: u32) {
  if (use_kept) {
    for (var i = 0u; i < kept_n; i++) { visit(kind, kept_x[i], kept_v[i]); }
    return;
  }
  if (use_cand) {
    sweep_cand(row, lid, kind);
    return;
  }
  for (var v0 = lid; v0 < p.V; v0 += 8u * WG) {
    let a = vec4<f32>(xv(row, v0), xv(row, v0 + WG), xv(row, v0 + 2u * WG),
                      xv(row, v0 + 3u * WG));
    let b = vec4<f32>(xv(row, v0 + 4u * WG), xv(row, v0 + 5u * WG), xv(row, v0 + 6u * WG),
                      xv(row, v0 + 7u * WG));
    visit(kind, a.x, v0);
    visit(kind, a.y, v0 + WG);
    visit(kind, a.z, v0 + 2u * WG);
    visit(kind, a.w, v0 + 3u * WG);
    visit(kind, b.x, v0 + 4u * WG);
    visit(kind, b.y, v0 + 5u * WG);
    visit(kind, b.z, v0 + 6u * WG);
    visit(kind, b.w, v0 + 7u * WG);
  }
}

// -- top-k spread over the GPU (SPREAD): the row's candidates --------------------------------
// One workgroup walking a 50k-logit row took most of a sampled token's time (the page's settings
// on mamba-130m through Dawn on an H200: 0.83 ms of GPU a token against greedy's 0.44). With
// top-k, only values at or above the row's k-th largest can matter, and each of them is at or
// above the k-th largest of its own slice of the row (a slice's k largest are k values of the
// row: the row's k-th largest is at least theirs). So sampling_candidates, one workgroup per
// slice of SLICE values, finds its slice's exact k-th largest x (the radix selection below) and
// writes every value at or above it -- k of them plus ties -- in its visiting order; then
// sampling_sample's passes walk those SP * KC candidates (unused slots: index NONE) instead of
// the row: the same top-k threshold, the same kept set, the same draw's terms, whose sums meet
// in the candidates' order (the order is fixed: the same seed and step give the same ids). A
// slice with more than KC (ties) records that and the row is walked whole, as without SPREAD.
//
// TOP-P ALONE (no top-k): no k bounds the top-p set, but where that set has few members -- a
// model sure of its next token -- it lies among the slices' top 128 (k = 128 for the
// candidates; SLICE_Z: each slice also writes its max and softmax mass). sampling_sample then
// takes the row's mass from the slices' (sum_s z_s exp(m_s - m)), finds the threshold among
// the candidates, and keeps it if it is at or above every slice's own threshold key: every
// value at or above it is then a candidate, so each key range the radix search weighs holds
// the same values as in the row -- the row's threshold. Otherwise (a flat distribution, a
// set reaching below some slice's 128th largest) it walks the row as without SPREAD.

// Values a thread of a slice (SLICE = 8 WG): a whole kept list (KEPT), which sampling_candidates'
// threshold passes walk.
const SLICE_VALUES = KEPT;

fn cand_at(row: u32, i: u32) -> vec2<u32> { return cand[row * p._p0 * KC + i]; }
// Where the slices' counts start in `cand`: after every row's SP * KC slots (SP = Params._p0).
fn counts_at() -> u32 { return p.rows * p._p0 * KC; }
// Where the slices' (max, mass) start (SLICE_Z): after the counts.
fn masses_at() -> u32 { return counts_at() + p.rows * p._p0; }

fn sweep_cand(row: u32, lid: u32, kind: u32) {
  let n = p._p0 * KC;
  for (var i0 = lid; i0 < n; i0 += 8u * WG) {
    let c0 = cand_at(row, min(i0, n - 1u));
    let c1 = cand_at(row, min(i0 + WG, n - 1u));
    let c2 = cand_at(row, min(i0 + 2u * WG, n - 1u));
    let c3 = cand_at(row, min(i0 + 3u * WG, n - 1u));
    let c4 = cand_at(row, min(i0 + 4u * WG, n - 1u));
    let c5 = cand_at(row, min(i0 + 5u * WG, n - 1u));
    let c6 = cand_at(row, min(i0 + 6u * WG, n - 1u));
    let c7 = cand_at(row, min(i0 + 7u * WG, n - 1u));
    visit(kind, bitcast<f32>(c0.x), c0.y);
    visit(kind, bitcast<f32>(c1.x), select(NONE, c1.y, i0 + WG < n));
    visit(kind, bitcast<f32>(c2.x), select(NONE, c2.y, i0 + 2u * WG < n));
    visit(kind, bitcast<f32>(c3.x), select(NONE, c3.y, i0 + 3u * WG < n));
    visit(kind, bitcast<f32>(c4.x), select(NONE, c4.y, i0 + 4u * WG < n));
    visit(kind, bitcast<f32>(c5.x), select(NONE, c5.y, i0 + 5u * WG < n));
    visit(kind, bitcast<f32>(c6.x), select(NONE, c6.y, i0 + 6u * WG < n));
    visit(kind, bitcast<f32>(c7.x), select(NONE, c7.y, i0 + 7u * WG < n));
  }
}

// The inclusive suffix sums of part_i[0..WG) in place (Hillis-Steele: part_i[t] becomes the sum
// of part_i[t..WG)); integers, so the order does not matter. Uniform control flow.
fn suffix_sums(lid: u32) {
  for (var off = 1u; off < WG; off <<= 1u) {
    workgroupBarrier();
    var v = part_i[lid];
    if (lid + off < WG) { v += part_i[lid + off]; }
    workgroupBarrier();
    part_i[lid] = v;
  }
  workgroupBarrier();
}

// The repetition penalty, applied where a slice of the row is first read: slice s0 .. s0 + SLICE
// of the logits with every history token's logit penalised, into part[0..SLICE) -- and with
// `copy` into the row's scratch, which the one-workgroup draw reads (PENALISED) when it walks
// the whole row. The one mechanism for every path: sampling_candidates and sampling_greedy_part
// call it on their own slices (PENALISE), sampling_penalise on every slice for a draw without
// candidates; no buffer copy of the logits, no dispatch of its own beside them. Every thread
// walks its share of the row's history and penalises the tokens that fall in the slice (a
// repeated token is written again with the same value). Uniform control flow.
fn penalise_slice(row: u32, s0: u32, lid: u32, copy: bool) {
  for (var j = 0u; j < SLICE_VALUES; j++) {
    let v = min(s0 + lid + j * WG, p.V - 1u);
    part[lid + j * WG] = logits[p.l_off + row * p.l_str + v];
  }
  workgroupBarrier();
  let n = min(ctl[1u + row], p.hist_cap);
  for (var j = lid; j < n; j += WG) {
    let tok = hist[row * p.hist_cap + j];
    if (tok >= s0 && tok < p.V && tok - s0 < SLICE_VALUES * WG) {
      part[tok - s0] = penalised(logits[p.l_off + row * p.l_str + tok]);
    }
  }
  workgroupBarrier();
  if (!copy) { return; }
  for (var j = 0u; j < SLICE_VALUES; j++) {
    let v = s0 + lid + j * WG;
    if (v < p.V) { scratch[row * p.V + v] = part[lid + j * WG]; }
  }
}

// Value j of this thread's share of the slice at s0 (v = s0 + lid + j WG, clamped into the row):
// the penalised logit penalise_slice left in part (PENALISE), else the logit as read.
fn slice_logit(row: u32, s0: u32, lid: u32, j: u32) -> f32 {
  if (PENALISE) { return part[lid + j * WG]; }
  return logit(row, min(s0 + lid + j * WG, p.V - 1u));
}

// grid (SP, rows): slice wid.x of row wid.y penalised into the row's scratch, for a draw that
// walks the row in one workgroup: any draw without sampling_candidates or the passes (a CPU
// adapter's top-p alone, top-k past SPREAD_MAX_K or temperature alone, a row shorter than two
// slices, MAMBAWEB_SAMPLE_SPREAD=0).
@compute @workgroup_size(WG)
fn sampling_penalise(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  penalise_slice(wid.y, wid.x * SLICE_VALUES * WG, lid, true);
}

// The bin of `bins` (the keys' digit) that holds the key of rank `remaining` (1: the largest),
// counting from bin 255 down, and in rank_left its rank within that bin -- or NONE and, in
// rank_left, `remaining` less every key counted, where the bins hold fewer. The same answer as
// one thread walking the bins down one by one (which took a dependent workgroup-memory load a
// bin, up to 256 a pass): each thread owns 256 / WG consecutive bins and gets the counts above
// them from suffix sums. Call after the barrier that ends the counting; uniform control flow.
var<private> rank_left: u32;
fn digit_at_rank(lid: u32, remaining: u32) -> u32 {
  let per = 256u / WG;
  var mine = 0u;
  for (var q = 0u; q < per; q++) { mine += atomicLoad(&bins[lid * per + q]); }
  part_i[lid] = mine;
  if (lid == 0u) { sel[0] = NONE; }
  suffix_sums(lid);
  var above = part_i[lid] - mine;            // the keys in the bins above this thread's
  for (var q = per; q > 0u; q--) {
    let b = lid * per + q - 1u;
    let c = atomicLoad(&bins[b]);
    if (above < remaining && remaining <= above + c) {
      sel[0] = b;
      sel[1] = remaining - above;
    }
    above += c;
  }
  let total = part_i[0];
  let d = workgroupUniformLoad(&sel[0]);     // after every thread's search
  rank_left = select(sel[1], remaining - total, d == NONE);
  workgroupBarrier();                        // sel and part_i read before their next writes
  return d;
}

// The k-th largest key of what sweep(PASS_TOPK) visits (the row, the candidates, or the
// thread's kept list), by four passes of 8-bit digits (radix selection, integer counts: the same
// answer in any order); 0 -- keep everything -- when there are fewer than k (NaN is not
// counted: visit). Fewer than k can only show in the first pass, as a digit found holds at
// least the rank left for the next passes. Uniform control flow (d is workgroup-uniform).
fn topk_threshold(row: u32, lid: u32) -> u32 {
  var prefix = 0u;
  var mask = 0u;
  var remaining = p.top_k;
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    for (var k = lid; k < 256u; k += WG) { atomicStore(&bins[k], 0u); }
    workgroupBarrier();
    pv_shift = shift;
    pv_mask = mask;
    pv_prefix = prefix;
    sweep(row, lid, PASS_TOPK);
    workgroupBarrier();
    let d = digit_at_rank(lid, remaining);
    if (d == NONE) { return 0u; }
    prefix |= d << shift;
    remaining = rank_left;
    mask |= 255u << shift;
  }
  return prefix;
}

// The sum (SUM) or the max of part[0..WG) into part[0], pairs in a fixed order (the same
// value for the same inputs on every run). Starts and ends with a barrier; uniform.
const SUM = true;
fn part_tree(lid: u32, sum: bool) {
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    workgroupBarrier();
    if (lid < st) {
      if (sum) { part[lid] += part[lid + st]; } else { part[lid] = max(part[lid], part[lid + st]); }
    }
  }
  workgroupBarrier();
}

// Whether value j of the thread's kept list counts at threshold tau: in the row, not a NaN.
fn kept_from(j: u32, tau: u32) -> bool {
  return kept_v[j] < p.V && !is_nan(kept_x[j]) && key_of(kept_x[j]) >= tau;
}

// grid (SP, rows): slice wid.x of row wid.y, values v = slice * SLICE + lid + j WG (j < 8).
@compute @workgroup_size(WG)
fn sampling_candidates(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let s0 = wid.x * SLICE_VALUES * WG;
  if (PENALISE) { penalise_slice(row, s0, lid, true); }
  load_slice(row, s0, lid);   // the thread's values as its kept list: the passes walk it
  let tau = topk_threshold(row, lid);        // the slice's k-th largest (0: fewer than k)
  // every value at or above tau, in visiting order: each thread's count, their prefix sums
  var mine = 0u;
  for (var j = 0u; j < SLICE_VALUES; j++) { if (kept_from(j, tau)) { mine += 1u; } }
  workgroupBarrier();
  part_i[lid] = mine;
  suffix_sums(lid);
  let total = workgroupUniformLoad(&part_i[0]);
  var at = total - part_i[lid];              // slots taken by threads before this one
  let slot0 = (row * p._p0 + wid.x) * KC;
  if (lid == 0u) { cand[counts_at() + row * p._p0 + wid.x] = vec2<u32>(total, tau); }
  if (total > KC) { return; }                // ties past the slots: the row is walked whole
  for (var j = 0u; j < SLICE_VALUES; j++) {
    if (kept_from(j, tau)) {
      cand[slot0 + at] = vec2<u32>(bitcast<u32>(kept_x[j]), kept_v[j]);
      at += 1u;
    }
  }
  for (var i = total + lid; i < KC; i += WG) { cand[slot0 + i] = vec2<u32>(0u, NONE); }
  if (SLICE_Z) { slice_mass(row, wid.x, lid); }
}

// TOP-P ALONE: the slice's largest x, m_s, and its softmax mass z_s = sum exp(x - m_s) over its
// values (NaN and past the row not counted), in a fixed order, at masses_at(): sampling_sample
// puts the row's mass together as sum_s z_s exp(m_s - m). Uniform control flow.
fn slice_mass(row: u32, s: u32, lid: u32) {
  var m = -3.4e38;
  for (var j = 0u; j < SLICE_VALUES; j++) { if (kept_from(j, 0u)) { m = max(m, kept_x[j]); } }
  part[lid] = m;
  part_tree(lid, !SUM);
  let ms = part[0];
  workgroupBarrier();                        // every thread has read part[0]
  var z = 0.0;
  for (var j = 0u; j < SLICE_VALUES; j++) {
    if (kept_from(j, 0u)) { z += exp(kept_x[j] - ms); }
  }
  let zs = threads_sum(lid, z);
  if (lid == 0u) {
    cand[masses_at() + row * p._p0 + s] = vec2<u32>(bitcast<u32>(ms), bitcast<u32>(zs));
  }
}

// Whether every slice of the row fit its KC slots (sampling_candidates' counts). Uniform.
fn slices_fit(row: u32, lid: u32) -> bool {
  flag_clear(lid);
  for (var s = lid; s < p._p0; s += WG) {
    if (cand[counts_at() + row * p._p0 + s].x > KC) { atomicStore(&kept_over, 1u); }
  }
  return !flag_any(lid);
}

// The softmax mass exp(x - pv_m) of what sweep visits with keys >= tau (the row, or the
// candidates, or the kept lists), summed in visiting order then in a fixed tree. Uniform.
fn row_mass(row: u32, lid: u32, tau: u32) -> f32 {
  acc_z = 0.0;
  pv_tau = tau;
  sweep(row, lid, PASS_Z);
  return threads_sum(lid, acc_z);
}

// The sum of every thread's v, pairs in a fixed order (part_tree), for every thread (through
// self_f[1]: topp_threshold's barrier comes before its next write). Uniform control flow.
fn threads_sum(lid: u32, v: f32) -> f32 {
  part[lid] = v;
  part_tree(lid, SUM);
  if (lid == 0u) { self_f[1] = part[0]; }
  workgroupBarrier();
  return self_f[1];
}

// TOP-P ALONE: the row's mass from its slices' (m_s, z_s) (sampling_candidates, SLICE_Z):
// sum_s z_s exp(m_s - pv_m), thread-strided over the slices, then a fixed tree. Uniform.
fn slices_mass(row: u32, lid: u32) -> f32 {
  var z = 0.0;
  for (var s = lid; s < p._p0; s += WG) {
    let e = cand[masses_at() + row * p._p0 + s];
    z += bitcast<f32>(e.y) * exp(bitcast<f32>(e.x) - pv_m);
  }
  return threads_sum(lid, z);
}

// TOP-P ALONE: T, the largest of the slices' threshold keys: every value with a key at or above
// T is a candidate (a slice's candidates are all its values at or above its own 128th largest).
// A threshold kappa >= T is then the row's: every key range the search weighs at or above it
// holds the same values -- the same masses -- among the candidates as in the row.
fn slices_top_key(row: u32, lid: u32) -> u32 {
  if (lid == 0u) { atomicStore(&bins[0], 0u); }
  workgroupBarrier();
  for (var s = lid; s < p._p0; s += WG) {
    atomicMax(&bins[0], cand[counts_at() + row * p._p0 + s].y);
  }
  workgroupBarrier();
  return atomicLoad(&bins[0]);
}

// `v` (the same in every thread) as a uniform value, for a branch around barriers.
var<workgroup> flag_v: u32;
fn uniform_flag(lid: u32, v: bool) -> bool {
  if (lid == 0u) { flag_v = select(0u, 1u, v); }
  return workgroupUniformLoad(&flag_v) != 0u;
}

// The top-p threshold over what sweep visits with keys >= tau: the largest key kappa with
// mass(key >= kappa) >= goal, by eight passes of 4-bit digits (each bin's mass summed per
// thread in visiting order, then the threads' sums in a fixed tree). Uniform control flow.
fn topp_threshold(row: u32, lid: u32, tau: u32, goal_mass: f32) -> u32 {
  pv_tau = tau;
  workgroupBarrier();                 // every thread has read self_f (row_mass, slices_mass)
  if (lid == 0u) {
    self_f[1] = goal_mass;
    self_f[0] = 0.0;                  // mass above the current key range
  }
  workgroupBarrier();
  let goal = self_f[1];
  var prefix = 0u;
  var mask = 0u;
  for (var ps = 0u; ps < 8u; ps++) {
    let shift = 28u - 4u * ps;
    for (var d = 0u; d < 16u; d++) { acc_h[d] = 0.0; }
    pv_shift = shift;
    pv_mask = mask;
    pv_prefix = prefix;
    sweep(row, lid, PASS_TOPP);
    for (var d = 0u; d < 16u; d++) { part[d * WG + lid] = acc_h[d]; }
    for (var st = WG / 2u; st > 0u; st >>= 1u) {   // each bin's WG sums, pairs in a fixed order
      workgroupBarrier();
      if (lid < st) {
        for (var d = 0u; d < 16u; d++) { part[d * WG + lid] += part[d * WG + lid + st]; }
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var above = self_f[0];
      var d = 0u;
      for (var k = 16u; k > 0u; k--) {
        let s = part[(k - 1u) * WG];
        if (above + s >= goal && s > 0.0) { d = k - 1u; break; }
        above += s;
      }
      sel[0] = d;
      self_f[0] = above;
    }
    workgroupBarrier();
    prefix |= sel[0] << shift;
    mask |= 15u << shift;
    workgroupBarrier();
  }
  return prefix;
}

@compute @workgroup_size(WG)
fn sampling_sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;            // one workgroup per row: uniform (a draw: greedy is _greedy's)

  // -- max of x ----------------------------------------------------------------------------
  use_kept = false;
  var fit = false;            // every slice's candidates fit its slots (uniform)
  if (SPREAD) { fit = slices_fit(row, lid); }
  use_cand = fit;
  acc_m = -3.4e38;
  sweep(row, lid, PASS_MAX);
  part[lid] = acc_m;
  part_tree(lid, !SUM);
  pv_m = part[0];
  workgroupBarrier();

  // -- top-k threshold: the k-th largest key -----------------------------------------------
  var tau = 0u;
  if (has(TOP_K)) {
    tau = topk_threshold(row, lid);
    if (KEEP_LISTS) {   // the values at or above the threshold into each thread's list (KEPT)
      flag_clear(lid);
      kept_n = 0u;
      pv_tau = tau;
      sweep(row, lid, PASS_KEEP);
      use_kept = !flag_any(lid);
    }
  }

  // -- top-p threshold ---------------------------------------------------------------------
  if (has(TOP_P)) {
    // top-p alone over the candidates (TOP-P ALONE): the row's mass from the slices', the
    // threshold among the candidates, kept only if every value at or above it is a candidate
    let alone = SPREAD && !has(TOP_K) && fit;
    var kappa = 0u;
    if (alone) {
      let goal = slices_mass(row, lid) * p.top_p;
      let top = slices_top_key(row, lid);
      // one pass first: the candidates at or above T hold the goal mass, so the threshold is
      // at or above T (if not, the row is walked without the search's eight passes over the
      // candidates: on the H200 a flat row's draw took 1.06 ms with them, 0.76 without)
      var held = uniform_flag(lid, row_mass(row, lid, top) >= goal);
      if (held) {
        kappa = topp_threshold(row, lid, tau, goal);
        held = uniform_flag(lid, kappa >= top);     // the sums' order could still differ
      }
      if (!held) {
        use_cand = false;       // the set reaches below some slice's candidates: the row
        kappa = topp_threshold(row, lid, tau, row_mass(row, lid, tau) * p.top_p);
      }
    } else {
      kappa = topp_threshold(row, lid, tau, row_mass(row, lid, tau) * p.top_p);
    }
    tau = max(tau, kappa);
  }

  // -- draw: Gumbel-max over the kept tokens -----------------------------------------------
  pv_k1 = pcg(p.seed ^ pcg(ctl[0] ^ pcg(row + 0x9E3779B9u)));
  pv_k2 = pcg(pv_k1 + 0x632BE5ABu);
  pv_tau = tau;
  acc_best = 0.0;
  acc_bi = 0xFFFFFFFFu;
  sweep(row, lid, PASS_DRAW);
  part[lid] = acc_best;
  part_i[lid] = acc_bi;
  argmax_tree(lid);          // the highest score, the lowest index on ties: argmax_shared's
  storageBarrier();          // every thread has read ctl[0] (k1) before lid 0 moves it
  if (PROBE && lid == 0u) {
    var at = row;                  // after the candidates, the slices' counts and masses
    if (SPREAD) { at = counts_at() + 2u * p.rows * p._p0 + row; }
    cand[at] = vec2<u32>(select(0u, 1u, use_kept), select(0u, 1u, use_cand));
  }
  put_id(row, lid, part_i[0]);
}

// ------------------------------------------------------------------------------------------
// Greedy in two dispatches. Candidates order by value, then the lower index (torch.argmax);
// NaN logits are never chosen; a row of only NaN gives 0xFFFFFFFF as before.

const NONE = 0xFFFFFFFFu;

// Whether candidate (x, i) beats (best, bi).
fn beats(x: f32, i: u32, best: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || x > best || (x == best && i < bi));
}

// Tree argmax over the workgroup's WG (part, part_i) pairs; the result in slot 0.
fn argmax_tree(lid: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && beats(part[lid + s], part_i[lid + s], part[lid], part_i[lid])) {
      part[lid] = part[lid + s];
      part_i[lid] = part_i[lid + s];
    }
    workgroupBarrier();
  }
}

// grid (GP, rows): workgroup g of row `row` takes slices g, g + GP, ... of SLICE = 8 WG values
// (thread lid: s0 + lid + j WG, coalesced), penalised there with PENALISE, and their argmax.
@compute @workgroup_size(WG)
fn sampling_greedy_part(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let GP = nwg.x;
  let S = SLICE_VALUES * WG;
  var best = 0.0;
  var bi = NONE;
  for (var s0 = wid.x * S; s0 < p.V; s0 += GP * S) {     // uniform: barriers with PENALISE
    if (PENALISE) { penalise_slice(row, s0, lid, false); }
    for (var j = 0u; j < SLICE_VALUES; j++) {
      let v = s0 + lid + j * WG;
      let x = slice_logit(row, s0, lid, j);
      if (v < p.V && !is_nan(x) && (bi == NONE || x > best)) { best = x; bi = v; }
    }
    if (PENALISE) { workgroupBarrier(); }   // the slice read before the next one's writes
  }
  part[lid] = best;
  part_i[lid] = bi;
  argmax_tree(lid);
  if (lid == 0u) { cand[row * GP + wid.x] = vec2<u32>(bitcast<u32>(part[0]), part_i[0]); }
}

// grid (rows): the row's GP candidates (GP = Params._p0) -> out[row].
@compute @workgroup_size(WG)
fn sampling_greedy_final(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  let GP = p._p0;
  var best = 0.0;
  var bi = NONE;
  for (var g = lid; g < GP; g += WG) {
    let c = cand[row * GP + g];
    if (beats(bitcast<f32>(c.x), c.y, best, bi)) { best = bitcast<f32>(c.x); bi = c.y; }
  }
  part[lid] = best;
  part_i[lid] = bi;
  argmax_tree(lid);
  put_id(row, lid, part_i[0]);
}

// ------------------------------------------------------------------------------------------
// TOP-P PASSES: top-p alone (and top-k past SPREAD_MAX_K, whose four 8-bit digit passes come
// first: sampling_topk_pass, integer counts; and plain temperature, whose only pass is each
// slice's max: sampling_max_pass) over the whole row, spread over the GPU. The one-workgroup
// walk of a flat row (a set of most of the vocabulary) took 0.76 ms a draw at 50,280 logits on an
// H200; here each of topp_threshold's eight 4-bit digit passes is a dispatch of one workgroup
// per slice (sampling_topp_pass: the slice's mass by digit under the prefix chosen so far),
// and every workgroup of the next dispatch puts the slices' bins together in the same fixed
// order, so all of them choose the same digit (no grid barrier needed: the dispatch boundary
// is one). Then sampling_slices_draw: each slice's Gumbel-max over its keys at or above the
// threshold, and sampling_greedy_final the best of the slices -- the same score, index and
// tie rule as the one-workgroup draw (beats), so the same id wherever the threshold is the
// same; the masses are the same sums up to their order. Pass 0 also finds each slice's max
// m_s and weighs its bins by exp(x - m_s); pass 1 takes the row's max m = max_s m_s and scales
// pass 0's bins by exp(m_s - m) (the row's mass is then the sum of the bins); later passes
// weigh by exp(x - m) as the walk does.
//
// `cand` for the passes, in vec2<u32> slots (SP = Params._p0 slices, Params.pass_i = the pass):
//   [rows, SP]            each slice's draw (score bits, id): sampling_greedy_final's input
//   [rows, SP]            each slice's max m_s (the first pass; sampling_max_pass's only)
//   [rows, 9, 2]          top-p's state after pass k's choice (k = 1 .. 7 written; the draw
//                         makes choice 8 itself): (prefix, mask) and (mass above the prefix's
//                         range, goal = p * the row's mass)
//   [rows, 9]             (m, 0): the row's max, beside each state
//   [rows, 8, SP, 8]      top-p pass k's 16 bin masses of slice s, two a slot
//   [rows, 5, 2]          top-k's state after pass j's choice (j = 1 .. 4): (prefix, mask),
//                         (rank left, 1 if the row holds fewer than k); j = 4: the threshold
//   [rows, 4, SP, 128]    top-k pass j's 256 bin counts of slice s, two a slot
//   [rows]                PROBE's (the row's max x, 2): the passes (tests)

fn tp_best(row: u32, s: u32) -> u32 { return row * p._p0 + s; }
fn tp_max(row: u32, s: u32) -> u32 { return (p.rows + row) * p._p0 + s; }
fn tp_state(row: u32, k: u32) -> u32 { return 2u * p.rows * p._p0 + (row * 9u + k) * 2u; }
fn tp_m(row: u32, k: u32) -> u32 { return 2u * p.rows * p._p0 + p.rows * 18u + row * 9u + k; }
fn tp_hist(row: u32, k: u32, s: u32) -> u32 {
  return 2u * p.rows * p._p0 + p.rows * 27u + ((row * 8u + k) * p._p0 + s) * 8u;
}
fn tk_state(row: u32, j: u32) -> u32 { return tp_hist(p.rows, 0u, 0u) + (row * 5u + j) * 2u; }
fn tk_counts(row: u32, j: u32, s: u32) -> u32 {
  return tk_state(p.rows, 0u) + ((row * 4u + j) * p._p0 + s) * 128u;
}
fn tp_probe(row: u32) -> u32 { return tk_counts(p.rows, 0u, 0u) + row; }

// The thread's values of slice s0 (v = s0 + lid + j WG) as its kept list, x = l / temperature.
fn load_slice(row: u32, s0: u32, lid: u32) {
  for (var j = 0u; j < SLICE_VALUES; j++) {
    kept_x[j] = slice_logit(row, s0, lid, j) * p.inv_temp;
    kept_v[j] = s0 + lid + j * WG;           // past the row: visit and kept_from skip it
  }
  kept_n = SLICE_VALUES;
  use_kept = true;
  use_cand = false;
}

// The row's max x from its slices' (the first pass's tp_max), a fixed tree. Uniform.
fn slices_max(row: u32, lid: u32) -> f32 {
  var mm = -3.4e38;
  for (var s = lid; s < p._p0; s += WG) { mm = max(mm, bitcast<f32>(cand[tp_max(row, s)].x)); }
  part[lid] = mm;
  part_tree(lid, !SUM);
  let m = part[0];
  workgroupBarrier();                        // every thread has read part[0]
  return m;
}

// The slice's max x into tp_max (the first pass of a chain). Uniform.
fn put_slice_max(row: u32, s: u32, lid: u32) {
  var m = -3.4e38;
  for (var j = 0u; j < SLICE_VALUES; j++) { if (kept_from(j, 0u)) { m = max(m, kept_x[j]); } }
  part[lid] = m;
  part_tree(lid, !SUM);
  pv_m = part[0];
  workgroupBarrier();                        // every thread has read part[0]
  if (lid == 0u) { cand[tp_max(row, s)] = vec2<u32>(bitcast<u32>(pv_m), 0u); }
}

// Top-k pass j's choice (j = 1 .. 4) from pass j - 1's counts: the 8-bit digit holding the
// key of the rank left (digit_at_rank over the slices' counts summed into bins, integers: the
// same in any order), as topk_threshold's loop chooses it; the slice-0 workgroup (first)
// writes the state for the next pass. Sets pv_prefix and pv_mask; returns the threshold so
// far (j = 4: the k-th largest key, 0 where the row holds fewer than k). Uniform control flow.
fn topk_choose(row: u32, lid: u32, j: u32, first: bool) -> u32 {
  var prefix = 0u;
  var mask = 0u;
  var remaining = p.top_k;
  var fewer = 0u;
  if (j > 1u) {
    let a = cand[tk_state(row, j - 1u)];
    let b = cand[tk_state(row, j - 1u) + 1u];
    prefix = a.x;
    mask = a.y;
    remaining = b.x;
    fewer = b.y;
  }
  for (var b = lid; b < 256u; b += WG) {
    var c = 0u;
    for (var s = 0u; s < p._p0; s++) {
      let e = cand[tk_counts(row, j - 1u, s) + b / 2u];
      c += select(e.x, e.y, (b & 1u) == 1u);
    }
    atomicStore(&bins[b], c);
  }
  workgroupBarrier();
  let d = digit_at_rank(lid, remaining);
  if (fewer == 0u) {
    if (d == NONE) {                         // fewer than k in the row: keep everything
      fewer = 1u;
      prefix = 0u;
      mask = 0u;
    } else {
      let shift = 32u - 8u * j;
      prefix |= d << shift;
      mask |= 255u << shift;
      remaining = rank_left;
    }
  }
  if (first && lid == 0u) {
    cand[tk_state(row, j)] = vec2<u32>(prefix, mask);
    cand[tk_state(row, j) + 1u] = vec2<u32>(remaining, fewer);
  }
  pv_prefix = prefix;
  pv_mask = mask;
  return prefix;
}

// grid (SP, rows), Params.pass_i = j (0 .. 3): slice wid.x's counts of the 8-bit digit at
// 24 - 8j of its keys under the prefix chosen so far (topk_threshold's passes, spread; the
// first also the slice's max, and penalised there with PENALISE, copied to scratch).
@compute @workgroup_size(WG)
fn sampling_topk_pass(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let s = wid.x;
  let j = p.pass_i;
  let s0 = s * SLICE_VALUES * WG;
  if (PENALISE) { penalise_slice(row, s0, lid, true); }
  load_slice(row, s0, lid);
  if (j == 0u) {
    put_slice_max(row, s, lid);
    pv_prefix = 0u;
    pv_mask = 0u;
  } else {
    topk_choose(row, lid, j, s == 0u);
  }
  workgroupBarrier();                        // digit_at_rank has read bins
  for (var b = lid; b < 256u; b += WG) { atomicStore(&bins[b], 0u); }
  workgroupBarrier();
  pv_shift = 24u - 8u * j;
  sweep(row, lid, PASS_TOPK);
  workgroupBarrier();
  for (var b = lid; b < 128u; b += WG) {
    cand[tk_counts(row, j, s) + b] = vec2<u32>(atomicLoad(&bins[2u * b]),
                                               atomicLoad(&bins[2u * b + 1u]));
  }
}

var<workgroup> tp_f: array<f32, 3>;          // above, goal, m (uniform through barriers)
var<workgroup> tp_u: array<u32, 2>;          // prefix, mask
var<workgroup> tp_bin: array<f32, 16>;      // the row's mass by digit (topp_choose)

// Pass k's choice (k = 1 .. 8) from pass k - 1's bins: sets pv_prefix, pv_mask, pv_m and
// tp_f / tp_u as topp_threshold's loop leaves them after that pass; the slice-0 workgroup
// writes it for the next pass. Uniform control flow.
fn topp_choose(row: u32, lid: u32, k: u32, first: bool) {
  let L = WG / 16u;                          // threads a bin
  let d = lid / L;
  let j = lid % L;
  var m = 0.0;
  if (k == 1u) {
    m = slices_max(row, lid);
  } else {
    m = bitcast<f32>(cand[tp_m(row, k - 1u)].x);
  }
  // bin d's mass over the slices: thread (d, j) takes slices j, j + L, ..., then the L sums
  // in order; pass 0's bins are in their slice's scale
  var h = 0.0;
  for (var s = j; s < p._p0; s += L) {
    let e = cand[tp_hist(row, k - 1u, s) + d / 2u];
    var b = bitcast<f32>(select(e.x, e.y, (d & 1u) == 1u));
    if (k == 1u) { b *= exp(bitcast<f32>(cand[tp_max(row, s)].x) - m); }
    h += b;
  }
  workgroupBarrier();
  part[lid] = h;
  workgroupBarrier();
  if (lid < 16u) {
    var t = 0.0;
    for (var q = 0u; q < L; q++) { t += part[lid * L + q]; }
    tp_bin[lid] = t;
  }
  workgroupBarrier();
  if (lid == 0u) {
    var z = 0.0;
    for (var b = 0u; b < 16u; b++) { z += tp_bin[b]; }
    var above = 0.0;
    var goal = z * p.top_p;                  // pass 1: every key counts (the row's mass)
    var prefix = 0u;
    var mask = 0u;
    if (k > 1u) {
      let st = cand[tp_state(row, k - 1u)];
      let sf = cand[tp_state(row, k - 1u) + 1u];
      prefix = st.x;
      mask = st.y;
      above = bitcast<f32>(sf.x);
      goal = bitcast<f32>(sf.y);
    }
    var dig = 0u;
    for (var b = 16u; b > 0u; b--) {
      let sb = tp_bin[b - 1u];
      if (above + sb >= goal && sb > 0.0) { dig = b - 1u; break; }
      above += sb;
    }
    let shift = 28u - 4u * (k - 1u);
    prefix |= dig << shift;
    mask |= 15u << shift;
    tp_u[0] = prefix;
    tp_u[1] = mask;
    tp_f[0] = above;
    tp_f[1] = goal;
    tp_f[2] = m;
    if (first) {
      cand[tp_state(row, k)] = vec2<u32>(prefix, mask);
      cand[tp_state(row, k) + 1u] = vec2<u32>(bitcast<u32>(above), bitcast<u32>(goal));
      cand[tp_m(row, k)] = vec2<u32>(bitcast<u32>(m), 0u);
    }
  }
  workgroupBarrier();
  pv_prefix = tp_u[0];
  pv_mask = tp_u[1];
  pv_m = tp_f[2];
}

// grid (SP, rows), Params.pass_i = k (0 .. 7): slice wid.x's mass by the 4-bit digit at
// 28 - 4k of its keys at or above top-k's threshold and under the prefix chosen so far (pass
// 0: in the slice's own scale, and the slice's max; penalised there with PENALISE -- the
// first dispatch of the chain -- and copied to scratch for the later passes, which read it
// through PENALISED).
@compute @workgroup_size(WG)
fn sampling_topp_pass(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let s = wid.x;
  let k = p.pass_i;
  let s0 = s * SLICE_VALUES * WG;
  if (PENALISE) { penalise_slice(row, s0, lid, true); }
  load_slice(row, s0, lid);
  var tau = 0u;                              // top-k's threshold: its passes came first
  if (has(TOP_K)) {
    if (k == 0u) {
      tau = topk_choose(row, lid, 4u, s == 0u);
    } else {
      tau = cand[tk_state(row, 4u)].x;
    }
  }
  if (k == 0u) {
    put_slice_max(row, s, lid);
    pv_prefix = 0u;
    pv_mask = 0u;
  } else {
    topp_choose(row, lid, k, s == 0u);
  }
  for (var d = 0u; d < 16u; d++) { acc_h[d] = 0.0; }
  pv_tau = tau;
  pv_shift = 28u - 4u * k;
  sweep(row, lid, PASS_TOPP);
  for (var d = 0u; d < 16u; d++) { part[d * WG + lid] = acc_h[d]; }
  for (var st = WG / 2u; st > 0u; st >>= 1u) {   // each bin's WG sums, pairs in a fixed order
    workgroupBarrier();
    if (lid < st) {
      for (var d = 0u; d < 16u; d++) { part[d * WG + lid] += part[d * WG + lid + st]; }
    }
  }
  workgroupBarrier();
  if (lid < 8u) {
    cand[tp_hist(row, k, s) + lid] = vec2<u32>(bitcast<u32>(part[2u * lid * WG]),
                                              bitcast<u32>(part[(2u * lid + 1u) * WG]));
  }
}

// grid (SP, rows): plain temperature (no top-k, no top-p), the chain's only pass -- slice
// wid.x's max x at tp_max (penalised there with PENALISE, copied to scratch), all the draw
// needs besides the row: the one-workgroup draw's two sweeps (the max, then Gumbel-max)
// spread, the max's by slice (max is exact in any order: the same m, the same scores).
@compute @workgroup_size(WG)
fn sampling_max_pass(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let s = wid.x;
  let s0 = s * SLICE_VALUES * WG;
  if (PENALISE) { penalise_slice(row, s0, lid, true); }
  load_slice(row, s0, lid);
  put_slice_max(row, s, lid);
}

// grid (SP, rows): the threshold from top-p pass 7's bins (at or above top-k's), or from top-k
// pass 3's counts without top-p, or none (0: every key) for plain temperature, then slice
// wid.x's Gumbel-max over its keys at or above it (the one-workgroup draw's scores) at
// tp_best; sampling_greedy_final (Params._p0 = SP) then picks the row's.
@compute @workgroup_size(WG)
fn sampling_slices_draw(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let s = wid.x;
  load_slice(row, s * SLICE_VALUES * WG, lid);
  var tau = 0u;
  if (has(TOP_P)) {
    if (has(TOP_K)) { tau = cand[tk_state(row, 4u)].x; }
    topp_choose(row, lid, 8u, false);
    tau = max(tau, pv_prefix);               // as sampling_sample: max(top-k's, top-p's)
  } else {
    if (has(TOP_K)) { tau = topk_choose(row, lid, 4u, false); }
    pv_m = slices_max(row, lid);
  }
  pv_k1 = pcg(p.seed ^ pcg(ctl[0] ^ pcg(row + 0x9E3779B9u)));
  pv_k2 = pcg(pv_k1 + 0x632BE5ABu);
  pv_tau = tau;
  acc_best = 0.0;
  acc_bi = NONE;
  sweep(row, lid, PASS_DRAW);
  part[lid] = acc_best;
  part_i[lid] = acc_bi;
  argmax_tree(lid);
  if (lid == 0u) {
    cand[tp_best(row, s)] = vec2<u32>(bitcast<u32>(part[0]), part_i[0]);
    // the probe (tests): the row's max x the scores are taken from, and 2 (the passes)
    if (PROBE && s == 0u) { cand[tp_probe(row)] = vec2<u32>(bitcast<u32>(pv_m), 2u); }
  }
}
