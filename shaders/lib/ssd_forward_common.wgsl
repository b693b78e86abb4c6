// What the Mamba-2 SSD sequence-forward kernels share (shaders/ssd_forward.wgsl: a workgroup
// of 64 threads per chunk; shaders/ssd_chunked.wgsl: the same sums spread over 256): flags,
// parameters, bindings, the dt, x, B and C reads, a workgroup's chunk and its cumsum. The
// recurrence, the chunk form and the layout are in ssd_forward.wgsl's header. The including file
// defines `const WG` (its workgroup size) before this include.

const HAS_BIAS = 1u;
const HAS_D = 2u;
const HAS_INIT = 4u;    // an initial state is in hs (else zeros)
const SAVE = 8u;        // nc = 1: also write the chunk start state into hc
const HAS_DT_MIN = 16u;
const HAS_DT_MAX = 32u;
override WS: u32 = 4096u;   // floats of workgroup memory (host-sized; each includer says its layout)

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, L: u32, nc: u32, nb: u32,
  flags: u32, TL: u32, dt_min: f32, dt_max: f32,
  x_off: u32, x_str: u32, dt_off: u32, dt_str: u32,   // x, dt views
  b_off: u32, b_str: u32, c_off: u32, c_str: u32,     // B, C views
  y_off: u32, y_str: u32, w_s: u32, w_dec: u32,       // y view; work regions (element offsets)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [Bsz*T, *] view, H*P wide
@group(0) @binding(2) var<storage, read> dtm: array<f32>;        // [Bsz*T, *] view, H wide (raw dt)
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;    // [H]
@group(0) @binding(4) var<storage, read> A_log: array<f32>;      // [H]
@group(0) @binding(5) var<storage, read> Bm: array<f32>;         // [Bsz*T, *] view, G*N wide
@group(0) @binding(6) var<storage, read> Cm: array<f32>;         // [Bsz*T, *] view, G*N wide
@group(0) @binding(7) var<storage, read> Dv: array<f32>;         // [H]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;    // [Bsz*T, *] view, H*P wide
@group(0) @binding(9) var<storage, read_write> hs: array<f32>;   // state [Bsz, H, P, N], in place
@group(0) @binding(10) var<storage, read_write> hc: array<f32>;  // chunk starts [Bsz, nc, H, P, N]
@group(0) @binding(11) var<storage, read_write> work: array<f32>;

var<workgroup> sh: array<f32, WS>;

// softplus (threshold 20, exact log1p) and sigmoid, shared with the other kernels:
//#include "lib/activations.wgsl"

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }


// dt of token row r, head h: bias, softplus, then clamp (flags, so dt_max = inf needs no inf).
fn dt_of(r: u32, h: u32) -> f32 {
  var v = dtm[p.dt_off + r * p.dt_str + h];
  if (has(HAS_BIAS)) { v += dt_bias[h]; }
  var d = softplus(v);
  if (has(HAS_DT_MIN)) { d = max(d, p.dt_min); }
  if (has(HAS_DT_MAX)) { d = min(d, p.dt_max); }
  return d;
}

fn xv(r: u32, h: u32, pp: u32) -> f32 { return x[p.x_off + r * p.x_str + h * p.P + pp]; }
fn bv(r: u32, g: u32, n: u32) -> f32 { return Bm[p.b_off + r * p.b_str + g * p.N + n]; }
fn cv(r: u32, g: u32, n: u32) -> f32 { return Cm[p.c_off + r * p.c_str + g * p.N + n]; }

struct Chunk { b: u32, h: u32, c: u32, g: u32, r0: u32, len: u32, ok: bool };

// Workgroup (x = head, y = chunk + nc * batch) -> its chunk; r0 = row of its first token.
fn chunk_of(wid: vec3<u32>) -> Chunk {
  var ch: Chunk;
  ch.h = wid.x;
  ch.c = wid.y % p.nc;
  ch.b = wid.y / p.nc;
  ch.g = ch.h / (p.H / p.G);
  let t0 = ch.c * p.L;
  ch.ok = ch.h < p.H && ch.b < p.nb && t0 < p.T;
  ch.r0 = ch.b * p.T + t0;
  ch.len = 0u;
  if (ch.ok) { ch.len = min(p.L, p.T - t0); }
  return ch;
}

// sh[L + s] = dt_s (the workgroup's WG threads in parallel), then sh[s] = cum[s] (one thread,
// fixed order).
fn chunk_prep(ch: Chunk, lid: u32) {
  for (var s = lid; s < ch.len; s += WG) { sh[p.L + s] = dt_of(ch.r0 + s, ch.h); }
  workgroupBarrier();
  if (lid == 0u) {
    let A = -exp(A_log[ch.h]);
    var acc = 0.0;
    for (var s = 0u; s < ch.len; s++) {
      acc += sh[p.L + s] * A;
      sh[s] = acc;
    }
  }
  workgroupBarrier();
}

// This workgroup's chunk as an index of [Bsz, nc, H]: its slot in hc, in work's chunk states
// (times P N) and in work's chunk decays.
fn chunk_slot(ch: Chunk) -> u32 { return (ch.b * p.nc + ch.c) * p.H + ch.h; }

// Token s's weight in the chunk's end state, w_s = exp(cum_last - cum_s) dt_s (after chunk_prep).
fn end_weight(s: u32, last: f32) -> f32 { return exp(last - sh[s]) * sh[p.L + s]; }

// M[l, s] (s <= l) from g = C_l . B_s: times the decay from s to l and dt_s (after chunk_prep;
// mask first: cum[l] - cum[s] <= 0).
fn m_entry(g: f32, l: u32, s: u32) -> f32 { return g * exp(sh[l] - sh[s]) * sh[p.L + s]; }
