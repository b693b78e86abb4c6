// Causal grouped-query attention, sequence forward (prefill, training): a tiled kernel with an
// online (streaming) softmax, so no T x T score matrix ever exists. The one-token decode step is
// shaders/attention_step.wgsl, the backward shaders/attention_backward.wgsl.
//
//   S[t, s] = scale q_t[h] . k_s[g]     g = h / (H / KVH),  s <= start + t  (causal)
//   o_t[h]  = sum_s softmax_s(S[t, :]) v_s[g];   lse[b, h, t] = log sum_s exp(S[t, s])  (SAVE)
// Query t of a sequence sits at key slot start + t: start = 0 without a cache; with a KV cache the
// keys are cache slots 0 .. start + t (the host wrote this call's k/v there first).
//
// Layout: token rows r = b*T + t. q, o are views [Bsz*T, *] (element (r, j) at off + r*str + j),
// H*Dh wide, head-major (head h = columns h*Dh .. h*Dh+Dh-1). Keys and values are read through a
// 4-D address  off + b*bstr + g*hstr + s*sstr + d,  which covers both a k/v view
// (bstr = T*str, hstr = Dh, sstr = str) and the cache [Bsz, KVH, Tmax, Dh]
// (bstr = KVH*Tmax*Dh, hstr = Tmax*Dh, sstr = Dh). lse [Bsz, H, T] contiguous.
//
// Dispatches: attention_forward grid (ceil(T / WG), H, Bsz): one workgroup per (b, h, tile of WG
// queries), one thread per query row. The workgroup walks the keys 0 .. (its last query's slot)
// in tiles of BK, staging each K and V tile in workgroup memory (2 BK Dh floats = WS, sized by
// the host from maxComputeWorkgroupStorageSize); each thread keeps its q row, running max m,
// running sum l and output row o in registers (MAXD floats each) and updates them key by key
// in slot order: o <- o exp(m - m') + exp(S - m') v. Barriers only between tiles; no atomics;
// every sum has a fixed order, so a rerun is bit-identical.
// attention_cache_write grid (ceil(KVH*Dh / 64), T, Bsz): copies this call's k/v rows into cache
// slots start .. start+T-1 (a separate dispatch, so every workgroup of the attention sees them).
// cache_k/cache_v may be one buffer (SHARED: both written through the cache_k binding, at
// element offsets ck_off / cv_off).
// Work: T (start + T/2) Dh * 4 flops per head; memory O(T Dh) per head.
// Key windows (the loop-pass budget, py_engine/ops/loop_budget.py: lavapipe cuts an invocation's
// loops short after 65535 passes, silently, which a row walking ~450 keys at Dh 64 reached):
// a long prefill runs attention_forward once per window of key slots [w0, w1), in order. Each
// row keeps its running (m, l, o) between windows: o unnormalised in `o` itself, m and l in
// `ml` [2, Bsz, H, T]. NOT_FIRST: start from them (else from nothing); NOT_LAST: store them
// (else finish: o / l and lse). One window (w0 = 0, w1 = all, flags clear) is the plain kernel.

const SAVE = 1u;
const SHARED = 2u;          // cache_k and cache_v are one buffer: both written via cache_k
const NOT_FIRST = 4u;       // a later key window: resume from o / ml
const NOT_LAST = 8u;        // not the last key window: leave o unnormalised, m and l in ml
const WG = 64u;
const MAXD = 256u;             // largest head_dim (registers per thread: q and o rows)
const NEG_BIG = -3.0e38;      // "minus infinity" for the running max (WGSL assumes no infs)

override WS: u32 = 4096u;      // floats of workgroup memory: 2 * BK * Dh (host-sized)

struct Params {
  T: u32, H: u32, KVH: u32, Dh: u32,
  nb: u32, BK: u32, start: u32, flags: u32,
  scale: f32, Tmax: u32, q_off: u32, q_str: u32,
  o_off: u32, o_str: u32, k_off: u32, k_bstr: u32,    // o view; k address
  k_hstr: u32, k_sstr: u32, v_off: u32, v_bstr: u32,  // v address
  v_hstr: u32, v_sstr: u32, kin_off: u32, kin_str: u32, // cache write: k/v input views
  vin_off: u32, vin_str: u32, ck_off: u32, cv_off: u32, // cache write: cache offsets
  w0: u32, w1: u32, _p0: u32, _p1: u32,                 // this dispatch's key window [w0, w1)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // [Bsz*T, *] view, H*Dh wide
@group(0) @binding(2) var<storage, read> kk: array<f32>;         // keys: k view or cache_k
@group(0) @binding(3) var<storage, read> vv: array<f32>;         // values: v view or cache_v
@group(0) @binding(4) var<storage, read_write> o: array<f32>;    // [Bsz*T, *] view, H*Dh wide
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;  // [Bsz, H, T] (SAVE)
@group(0) @binding(6) var<storage, read_write> cache_k: array<f32>;  // [Bsz, KVH, Tmax, Dh]
@group(0) @binding(7) var<storage, read_write> cache_v: array<f32>;  // [Bsz, KVH, Tmax, Dh]
@group(0) @binding(8) var<storage, read_write> ml: array<f32>;       // [2, Bsz, H, T] (windows)

var<workgroup> kv: array<f32, WS>;   // K tile [BK, Dh] | V tile [BK, Dh]

@compute @workgroup_size(WG)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let h = wid.y;
  let b = wid.z;
  let g = h / (p.H / p.KVH);
  let Dh = p.Dh;
  let t = wid.x * WG + lid;
  let live = t < p.T;
  let r = b * p.T + t;
  // keys this workgroup needs in this window: slots w0 .. start + (its last query), uniform
  let kv_end = min(p.start + min(wid.x * WG + WG, p.T), p.w1);
  let last = (p.flags & NOT_LAST) == 0u;
  if (p.w0 >= kv_end && !last) { return; }   // uniform: nothing for this workgroup here
  let my_end = p.start + t + 1u;   // this query's keys: slots < my_end
  let touch = live && (my_end > p.w0 || last);   // keys in this window, or it finishes here
  let si = (b * p.H + h) * p.T + t;              // (m, l) slot in ml
  let BHT = p.nb * p.H * p.T;
  var qr: array<f32, MAXD>;
  var acc: array<f32, MAXD>;
  var m = NEG_BIG;
  var l = 0.0;
  if (touch) {
    let resume = (p.flags & NOT_FIRST) != 0u;
    for (var d = 0u; d < Dh; d++) {
      qr[d] = q[p.q_off + r * p.q_str + h * Dh + d] * p.scale;
      acc[d] = select(0.0, o[p.o_off + r * p.o_str + h * Dh + d], resume);
    }
    if (resume) {
      m = ml[si];
      l = ml[BHT + si];
    }
  }
  let kb = p.k_off + b * p.k_bstr + g * p.k_hstr;
  let vb = p.v_off + b * p.v_bstr + g * p.v_hstr;
  let voff = p.BK * Dh;
  for (var s0 = p.w0; s0 < kv_end; s0 += p.BK) {
    let n = min(p.BK, kv_end - s0);
    for (var e = lid; e < n * Dh; e += WG) {
      let j = e / Dh;
      let d = e % Dh;
      kv[e] = kk[kb + (s0 + j) * p.k_sstr + d];
      kv[voff + e] = vv[vb + (s0 + j) * p.v_sstr + d];
    }
    workgroupBarrier();
    if (touch) {
      let jn = min(n, max(my_end, s0) - s0);   // causal: keys of this tile up to slot start + t
      for (var j = 0u; j < jn; j++) {
        var sc = 0.0;
        for (var d = 0u; d < Dh; d++) { sc += qr[d] * kv[j * Dh + d]; }
        if (sc > m) {   // new running max: rescale what was summed so far
          let c = exp(m - sc);
          l *= c;
          for (var d = 0u; d < Dh; d++) { acc[d] *= c; }
          m = sc;
        }
        let e = exp(sc - m);
        l += e;
        for (var d = 0u; d < Dh; d++) { acc[d] += e * kv[voff + j * Dh + d]; }
      }
    }
    workgroupBarrier();
  }
  if (touch && !last) {   // a later window continues from here
    for (var d = 0u; d < Dh; d++) { o[p.o_off + r * p.o_str + h * Dh + d] = acc[d]; }
    ml[si] = m;
    ml[BHT + si] = l;
  } else if (touch) {
    let inv = 1.0 / l;   // l >= 1: the key at the running max contributes exp(0)
    for (var d = 0u; d < Dh; d++) { o[p.o_off + r * p.o_str + h * Dh + d] = acc[d] * inv; }
    if ((p.flags & SAVE) != 0u) { lse[si] = m + log(l); }
  }
}

// This call's k/v rows into cache slots start + t (the host checked start + T <= Tmax).
@compute @workgroup_size(64)
fn attention_cache_write(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;     // g * Dh + d
  let t = gid.y;
  let b = gid.z;
  if (j >= p.KVH * p.Dh || t >= p.T || b >= p.nb) { return; }
  let g = j / p.Dh;
  let d = j % p.Dh;
  let r = b * p.T + t;
  let c = ((b * p.KVH + g) * p.Tmax + p.start + t) * p.Dh + d;
  cache_k[p.ck_off + c] = kk[p.kin_off + r * p.kin_str + j];
  let x = vv[p.vin_off + r * p.vin_str + j];
  // WebGPU refuses two writable bindings of one buffer: a fused cache goes through cache_k
  if ((p.flags & SHARED) != 0u) { cache_k[p.cv_off + c] = x; } else { cache_v[p.cv_off + c] = x; }
}
