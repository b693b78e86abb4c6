// Next-token sampling on the GPU: logits [rows, V] -> one u32 token id per row.
//
// HuggingFace semantics (generate's logits processors, in their order):
//   repetition penalty : for every token in the row's history, l = l < 0 ? l * pen : l / pen
//                        (applied once per token however often it occurs)
//   greedy             : argmax of the penalised logits, lowest index on ties (torch.argmax)
//   temperature        : x = l / temperature
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
//   sampling_penalty  one thread per (row, history slot): scratch[tok] = penalised logits[tok]
//                     (scratch holds a copy of the logits, made by a buffer copy before it)
//   sampling_sample   one 128-thread workgroup per row; passes over V: 1 (max) + 4 (top-k)
//                     + 1 (Z) + 8 (top-p) + 1 (draw) at most.
//   sampling_greedy_part, sampling_greedy_final
//                     greedy in two dispatches: GP workgroups per row each take the argmax of
//                     a strided share of the row, then one workgroup per row picks among those
//                     GP candidates. One workgroup scanning a 50k vocabulary took 130-220 us
//                     per token on an H200 (tools/profile_kernels.py), as long as a 1.4b
//                     layer's weights; spread over the GPU it is two short dispatches.
// With ADVANCE (a pipeline constant) the dispatch that writes out[row] -- sampling_sample or
// sampling_greedy_final -- also does decode_control.wgsl's work (advance_after below): one
// dispatch fewer a decoded token for every family (py_engine/ops/sampling.sample's `advance`).

override WG: u32 = 128u;    // threads per row (a pipeline constant: 32 for small V, 128 above)
const GREEDY = 1u;
const PENALISED = 2u;   // read the penalised scratch copy instead of the logits
const TOP_K = 4u;
const TOP_P = 8u;

struct Params {
  V: u32, rows: u32, flags: u32, top_k: u32,
  top_p: f32, temperature: f32, penalty: f32, seed: u32,
  hist_cap: u32, l_off: u32, l_str: u32, _p0: u32,
  pos_count: u32, ring_len: u32, _p2: u32, _p3: u32,   // ADVANCE: positions; ring length R
};

// ctl and hist are written only with ADVANCE; the other entry points read them.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;  // [step, count_0, count_1, ...]
@group(0) @binding(3) var<storage, read_write> hist: array<u32>; // [rows, hist_cap]
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;  // [rows, V]
@group(0) @binding(5) var<storage, read_write> out: array<u32>;  // [rows]
@group(0) @binding(6) var<storage, read_write> cand: array<vec2<u32>>;  // greedy: [rows, GP]
                                                                   // (value bits, index)
@group(0) @binding(7) var<storage, read_write> pos: array<u32>;  // [pos_count] (ADVANCE)
@group(0) @binding(8) var<storage, read_write> ring: array<u32>; // [2 * ring_len] (ADVANCE)

// Whether the dispatch that chooses the ids also advances the decode's counters (the host
// binds scratch buffers at 3, 7 and 8 when it does not: rw_dummy).
override ADVANCE: bool = false;

// decode_control.wgsl's decode_advance, by the thread that chose row `row`'s id `tok` (lid 0
// of the row's workgroup): the row's history and count; row 0's workgroup also the step
// counter and the positions. Only sampling_sample reads ctl[0] (its draw's seed), so the host
// folds this into it for one row only: another row's workgroup could still be drawing.
// With a ring (ring_len R > 0, one row: py_engine/models/generate.py) the id also goes to
// ring[s % R] and ring[s % R + R], s the step counter before it moves: the ids of any R
// consecutive steps lie in one contiguous range for the host to read back, written here
// instead of by a buffer copy after each step (which also ended the compute pass).
fn advance_after(row: u32, tok: u32) {
  let n = ctl[1u + row];
  if (n < p.hist_cap) {
    hist[row * p.hist_cap + n] = tok;
    ctl[1u + row] = n + 1u;
  }
  if (row == 0u) {
    let s = ctl[0];
    if (p.ring_len > 0u) {
      ring[s % p.ring_len] = tok;
      ring[s % p.ring_len + p.ring_len] = tok;
    }
    ctl[0] = s + 1u;
    for (var b = 0u; b < p.pos_count; b++) { pos[b] += 1u; }
  }
}

// out[row] = tok, and with ADVANCE the counters (lid 0 only; after every thread's reads of ctl).
fn put_id(row: u32, lid: u32, tok: u32) {
  if (lid == 0u) {
    out[row] = tok;
    if (ADVANCE) { advance_after(row, tok); }
  }
}

var<workgroup> bins: array<atomic<u32>, 256>;
var<workgroup> part: array<f32, 16 * WG>;    // 16 bins x WG threads (top-p), or WG values
var<workgroup> part_i: array<u32, WG>;
var<workgroup> sel: array<u32, 2>;          // chosen digit, remaining count
var<workgroup> self_f: array<f32, 2>;       // above mass / Z

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// ------------------------------------------------------------------------------------------

@compute @workgroup_size(64)
fn sampling_penalty(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let row = gid.y;
  if (row >= p.rows || j >= p.hist_cap || j >= ctl[1u + row]) { return; }
  let tok = hist[row * p.hist_cap + j];
  if (tok >= p.V) { return; }
  let l = logits[p.l_off + row * p.l_str + tok];
  scratch[row * p.V + tok] = select(l / p.penalty, l * p.penalty, l < 0.0);
}

// ------------------------------------------------------------------------------------------

fn logit(row: u32, v: u32) -> f32 {
  if (has(PENALISED)) { return scratch[row * p.V + v]; }
  return logits[p.l_off + row * p.l_str + v];
}

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

// Argmax over WG (value, index) pairs in `part` / `part_i`, lowest index on ties. Thread 0.
fn argmax_shared() -> u32 {
  var best = part[0];
  var bi = part_i[0];
  for (var k = 1u; k < WG; k++) {
    let v = part[k];
    let i = part_i[k];
    if (i != 0xFFFFFFFFu && (bi == 0xFFFFFFFFu || v > best || (v == best && i < bi))) {
      best = v;
      bi = i;
    }
  }
  return bi;
}

@compute @workgroup_size(WG)
fn sampling_sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;            // one workgroup per row: uniform
  let V = p.V;

  // -- greedy: argmax of the (penalised) logits ------------------------------------------
  if (has(GREEDY)) {
    var best = 0.0;
    var bi = 0xFFFFFFFFu;
    for (var v = lid; v < V; v += WG) {
      let x = logit(row, v);
      if (x == x && (bi == 0xFFFFFFFFu || x > best)) { best = x; bi = v; }
    }
    part[lid] = best;
    part_i[lid] = bi;
    workgroupBarrier();
    var tok = 0u;
    if (lid == 0u) { tok = argmax_shared(); }
    put_id(row, lid, tok);
    return;
  }

  // -- max of x ----------------------------------------------------------------------------
  var m = -3.4e38;
  for (var v = lid; v < V; v += WG) {
    let x = logit(row, v) / p.temperature;
    if (x == x) { m = max(m, x); }
  }
  part[lid] = m;
  workgroupBarrier();
  if (lid == 0u) {
    var mm = part[0];
    for (var k = 1u; k < WG; k++) { mm = max(mm, part[k]); }
    self_f[0] = mm;
  }
  workgroupBarrier();
  m = self_f[0];
  workgroupBarrier();

  // -- top-k threshold: the k-th largest key -----------------------------------------------
  var tau = 0u;
  if (has(TOP_K)) {
    var prefix = 0u;
    var mask = 0u;
    var remaining = p.top_k;
    for (var ps = 0u; ps < 4u; ps++) {
      let shift = 24u - 8u * ps;
      for (var k = lid; k < 256u; k += WG) { atomicStore(&bins[k], 0u); }
      workgroupBarrier();
      for (var v = lid; v < V; v += WG) {
        let x = logit(row, v) / p.temperature;
        let key = key_of(x);
        if (x == x && (key & mask) == prefix) { atomicAdd(&bins[(key >> shift) & 255u], 1u); }
      }
      workgroupBarrier();
      if (lid == 0u) {
        var rem = remaining;
        var d = 0u;
        for (var k = 256u; k > 0u; k--) {
          let c = atomicLoad(&bins[k - 1u]);
          if (c >= rem) { d = k - 1u; break; }
          rem -= c;
        }
        sel[0] = d;
        sel[1] = rem;
      }
      workgroupBarrier();
      prefix |= sel[0] << shift;
      remaining = sel[1];
      mask |= 255u << shift;
      workgroupBarrier();
    }
    tau = prefix;
  }

  // -- top-p threshold ---------------------------------------------------------------------
  if (has(TOP_P)) {
    var z = 0.0;
    for (var v = lid; v < V; v += WG) {
      let x = logit(row, v) / p.temperature;
      if (x == x && key_of(x) >= tau) { z += exp(x - m); }
    }
    part[lid] = z;
    workgroupBarrier();
    if (lid == 0u) {
      var s = 0.0;
      for (var k = 0u; k < WG; k++) { s += part[k]; }
      self_f[1] = s * p.top_p;    // goal mass
      self_f[0] = 0.0;            // mass above the current key range
    }
    workgroupBarrier();
    let goal = self_f[1];
    var prefix = 0u;
    var mask = 0u;
    for (var ps = 0u; ps < 8u; ps++) {
      let shift = 28u - 4u * ps;
      var h: array<f32, 16>;
      for (var d = 0u; d < 16u; d++) { h[d] = 0.0; }
      for (var v = lid; v < V; v += WG) {
        let x = logit(row, v) / p.temperature;
        let key = key_of(x);
        if (x == x && key >= tau && (key & mask) == prefix) {
          h[(key >> shift) & 15u] += exp(x - m);
        }
      }
      for (var d = 0u; d < 16u; d++) { part[d * WG + lid] = h[d]; }
      workgroupBarrier();
      if (lid < 16u) {
        var s = 0.0;
        for (var k = 0u; k < WG; k++) { s += part[lid * WG + k]; }
        part[lid * WG] = s;
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
    tau = max(tau, prefix);
  }

  // -- draw: Gumbel-max over the kept tokens -----------------------------------------------
  let k1 = pcg(p.seed ^ pcg(ctl[0] ^ pcg(row + 0x9E3779B9u)));
  let k2 = pcg(k1 + 0x632BE5ABu);
  var best = 0.0;
  var bi = 0xFFFFFFFFu;
  for (var v = lid; v < V; v += WG) {
    let x = logit(row, v) / p.temperature;
    if (x == x && key_of(x) >= tau) {
      let hsh = pcg(pcg(v + k1) ^ k2);
      let u = (f32(hsh >> 8u) + 0.5) * (1.0 / 16777216.0);
      let s = (x - m) - log(-log(u));
      if (bi == 0xFFFFFFFFu || s > best) { best = s; bi = v; }
    }
  }
  part[lid] = best;
  part_i[lid] = bi;
  workgroupBarrier();        // every thread has read ctl[0] (k1) before lid 0 moves it
  var tok = 0u;
  if (lid == 0u) { tok = argmax_shared(); }
  put_id(row, lid, tok);
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

// grid (GP, rows): workgroup g of row `row` scans v = g*WG + lid, stepping GP*WG (coalesced).
@compute @workgroup_size(WG)
fn sampling_greedy_part(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y;
  let GP = nwg.x;
  var best = 0.0;
  var bi = NONE;
  for (var v = wid.x * WG + lid; v < p.V; v += GP * WG) {
    let x = logit(row, v);
    if (x == x && (bi == NONE || x > best)) { best = x; bi = v; }
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
