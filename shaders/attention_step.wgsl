// Causal grouped-query attention, one-token decode step against the KV cache (the sequence form
// is attention_forward.wgsl). The slot of the new token is read ON THE GPU from pos, so a
// recorded decode graph (this dispatch + position_advance) replays with no host writes.
//
//   n = pos[b] (tokens before this one);  cache[b, g, n] <- k, v   (skipped when n >= Tmax)
//   S[s] = scale q[h] . key_s[g],  s = 0 .. n  (key_s = cache slot s for s < n, this k for s = n)
//   o[h] = sum_s softmax(S)[s] value_s[g];       g = h / (H / KVH)
// With n >= Tmax (the host refuses that earlier) nothing is written and the query attends to
// the Tmax cached slots plus itself: never an out-of-bounds or aliased write.
//
// Layout: q [Bsz, *] view H*Dh wide, k/v [Bsz, *] views KVH*Dh wide, o [Bsz, *] view H*Dh wide
// (element (b, j) at off + b*str + j); cache_k/cache_v [Bsz, KVH, Tmax, Dh] (at element offsets
// ck_off / cv_off of their bindings; one binding when both are one buffer); pos [Bsz] u32.
//
// Dispatch: 1, grid (H, Bsz): one workgroup of WG threads per (b, h), split-K: thread i takes
// slots i, i + WG, ... with its own online softmax (max m_i, sum l_i, o_i in registers), then
// the workgroup merges the WG partials in a fixed order (M = max m_i, L = sum l_i e^(m_i - M),
// o = sum o_i e^(m_i - M) / L, DC dims at a time through workgroup memory): deterministic, no
// atomics. Long caches (the loop-pass budget, py_engine/ops/loop_budget.py: lavapipe cuts an
// invocation's loops short after 65535 passes, silently -- a cache of 8000 slots at Dh 256)
// split the slots over NS workgroups per (b, h) (grid z; `span` slots each): each writes its
// partial (M, L, unnormalised o) to `part` [Bsz, H, NS, 2 + Dh] and attention_step_merge
// (grid (H, Bsz)) combines them the same way. NS = 1 (span 0): the one dispatch above.
// The current token's k/v come from the inputs, not from the cache, so no workgroup
// reads the slot another one writes: the first query head of each group writes it.
// Work: n Dh * 4 flops per head; reads the cache once per query head of a group.

const WG = 64u;
const SHARED = 1u;          // cache_k and cache_v are one buffer: both accessed via cache_k
const MAXD = 256u;
const DC = 32u;               // dims merged per round
const NEG_BIG = -3.0e38;

struct Params {
  H: u32, KVH: u32, Dh: u32, nb: u32,
  Tmax: u32, scale: f32, q_off: u32, q_str: u32,
  k_off: u32, k_str: u32, v_off: u32, v_str: u32,
  o_off: u32, o_str: u32, ck_off: u32, cv_off: u32,   // o view; cache element offsets
  flags: u32, span: u32, NS: u32, _p2: u32,    // slots per split (0: one split), splits
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;              // [Bsz, *] view, H*Dh wide
@group(0) @binding(2) var<storage, read> k: array<f32>;              // [Bsz, *] view, KVH*Dh wide
@group(0) @binding(3) var<storage, read> v: array<f32>;              // [Bsz, *] view, KVH*Dh wide
@group(0) @binding(4) var<storage, read_write> cache_k: array<f32>;  // [Bsz, KVH, Tmax, Dh]
@group(0) @binding(5) var<storage, read_write> cache_v: array<f32>;  // [Bsz, KVH, Tmax, Dh]
@group(0) @binding(6) var<storage, read> pos: array<u32>;            // [Bsz] tokens seen
@group(0) @binding(7) var<storage, read_write> o: array<f32>;        // [Bsz, *] view, H*Dh wide
@group(0) @binding(8) var<storage, read_write> part: array<f32>;     // [Bsz, H, NS, 2 + Dh]

// WebGPU refuses two writable bindings of one buffer: a fused cache goes through cache_k.
fn cv_load(i: u32) -> f32 {
  if ((p.flags & SHARED) != 0u) { return cache_k[i]; }
  return cache_v[i];
}

fn cv_store(i: u32, x: f32) {
  if ((p.flags & SHARED) != 0u) { cache_k[i] = x; } else { cache_v[i] = x; }
}

var<workgroup> part_m: array<f32, WG>;
var<workgroup> part_l: array<f32, WG>;
var<workgroup> part_o: array<f32, 2048>;   // WG * DC

@compute @workgroup_size(WG)
fn attention_step(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  let z = wid.z;   // split of the slots (0 when NS = 1)
  let Dh = p.Dh;
  let g = h / (p.H / p.KVH);
  let n = pos[b];
  let cached = min(n, p.Tmax);          // cache slots read: 0 .. cached - 1
  let cb = (b * p.KVH + g) * p.Tmax * Dh + p.ck_off;   // this (b, g) in cache_k
  let vb = (b * p.KVH + g) * p.Tmax * Dh + p.cv_off;   // and in cache_v
  let kin = p.k_off + b * p.k_str + g * Dh;
  let vin = p.v_off + b * p.v_str + g * Dh;
  if (h % (p.H / p.KVH) == 0u && n < p.Tmax && z == 0u) {
    for (var d = lid; d < Dh; d += WG) {
      cache_k[cb + n * Dh + d] = k[kin + d];
      cv_store(vb + n * Dh + d, v[vin + d]);
    }
  }
  var qr: array<f32, MAXD>;
  var acc: array<f32, MAXD>;
  for (var d = 0u; d < Dh; d++) {
    qr[d] = q[p.q_off + b * p.q_str + h * Dh + d] * p.scale;
    acc[d] = 0.0;
  }
  var m = NEG_BIG;
  var l = 0.0;
  var s_lo = 0u;
  var s_hi = cached + 1u;
  if (p.span > 0u) {
    s_lo = z * p.span;
    s_hi = min(s_hi, s_lo + p.span);
  }
  for (var s = s_lo + lid; s < s_hi; s += WG) {
    // slot s: the cache below `cached`, this token's own k/v at s == cached
    var ka = cb + s * Dh;
    var va = vb + s * Dh;
    if (s == cached) { ka = kin; va = vin; }
    var sc = 0.0;
    if (s == cached) {
      for (var d = 0u; d < Dh; d++) { sc += qr[d] * k[ka + d]; }
    } else {
      for (var d = 0u; d < Dh; d++) { sc += qr[d] * cache_k[ka + d]; }
    }
    if (sc > m) {
      let c = exp(m - sc);
      l *= c;
      for (var d = 0u; d < Dh; d++) { acc[d] *= c; }
      m = sc;
    }
    let e = exp(sc - m);
    l += e;
    if (s == cached) {
      for (var d = 0u; d < Dh; d++) { acc[d] += e * v[va + d]; }
    } else {
      for (var d = 0u; d < Dh; d++) { acc[d] += e * cv_load(va + d); }
    }
  }
  // merge the WG partials (threads with no slot have l = 0 and m = NEG_BIG: weight 0)
  part_m[lid] = m;
  workgroupBarrier();
  var M = NEG_BIG;
  for (var i = 0u; i < WG; i++) { M = max(M, part_m[i]); }
  let w = exp(m - M);
  part_l[lid] = l * w;
  workgroupBarrier();
  var L = 0.0;
  for (var i = 0u; i < WG; i++) { L += part_l[i]; }
  let split = p.span > 0u;
  let pb = ((b * p.H + h) * p.NS + z) * (2u + Dh);   // this split's partial in `part`
  if (split && lid == 0u) {
    part[pb] = M;
    part[pb + 1u] = L;
  }
  let inv = select(1.0 / L, 1.0, split);
  for (var d0 = 0u; d0 < Dh; d0 += DC) {
    let dn = min(DC, Dh - d0);
    for (var j = 0u; j < dn; j++) { part_o[lid * DC + j] = acc[d0 + j] * w; }
    workgroupBarrier();
    if (lid < dn) {
      var sum = 0.0;
      for (var i = 0u; i < WG; i++) { sum += part_o[i * DC + lid]; }
      if (split) {
        part[pb + 2u + d0 + lid] = sum;
      } else {
        o[p.o_off + b * p.o_str + h * Dh + d0 + lid] = sum * inv;
      }
    }
    workgroupBarrier();
  }
}

// Long caches: the NS partials of (b, h) -> o, in split order (grid (H, Bsz), thread d: dims
// d, d + WG, ..). A split with no slots has M = NEG_BIG, L = 0: weight 0.
@compute @workgroup_size(WG)
fn attention_step_merge(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  let Dh = p.Dh;
  let base = (b * p.H + h) * p.NS * (2u + Dh);
  var M = NEG_BIG;
  for (var z = 0u; z < p.NS; z++) { M = max(M, part[base + z * (2u + Dh)]); }
  var L = 0.0;
  for (var z = 0u; z < p.NS; z++) {
    let q0 = base + z * (2u + Dh);
    L += part[q0 + 1u] * exp(part[q0] - M);
  }
  for (var d = lid; d < Dh; d += WG) {
    var acc = 0.0;
    for (var z = 0u; z < p.NS; z++) {
      let q0 = base + z * (2u + Dh);
      acc += part[q0 + 2u + d] * exp(part[q0] - M);
    }
    o[p.o_off + b * p.o_str + h * Dh + d] = acc / L;
  }
}
