// Mamba-2 SSD sequence forward with each chunk's work spread over 256 threads (py_engine/ops/
// ssd.py, path "parallel"): the same chunked sums as ssd_forward.wgsl (its header has the
// recurrence, the chunk form, the views and the buffers), in its F1 / F3 roles; its carry
// (ssd_forward_carry) runs between them. ssd_forward.wgsl gives a chunk 64 threads that read x,
// B and C from memory once per product term (a thread per state element walking the chunk's
// tokens: L loads of x and B for each of P N / 64 elements); here a workgroup stages B and C in
// workgroup memory once, and a thread owns a state row's class of dims with the chunk's
// per-token values in registers:
//   ssd_chunk_states  S_c [P, N] (the chunk end state from zero, into work) and exp(cum_last):
//                     thread (pp, q) holds w_t x_t[pp] for every token t and sums
//                     w_t x_t[pp] B_t[n] over t for n = q, q + NQ, .. (the same terms in the
//                     same order as ssd_forward_chunk)
//   ssd_chunk_out     y of the chunk's tokens from its start state hc:
//                     M[l, s] = (C_l . B_s) exp(cum_l - cum_s) dt_s (s <= l; as ssd_forward),
//                     thread (pp, q) sums hc[pp, n] C_t[n] over its n for every t (a share),
//                     then thread (t, pp): sum_(s <= t) M[t, s] x_s[pp] + exp(cum_t) (the
//                     shares of row pp in class order) + D x_t[pp]
// The start-state term's dims are summed class by class, so y equals ssd_forward's to
// rounding, not bit for bit; S_c is bit-identical where the compiler contracts alike.
// Workgroup memory (floats): cum [L] | dt [L] | C tile [L, N] | B tile [N, L] (transposed:
// M's threads read consecutive tokens s of one dim, conflict-free) | M [L, L]; the shares
// [P NQ, L] overwrite the two tiles once M and the shares are made (the host keeps P NQ <= 2 N
// and P NQ <= WG). Grid (H, nc * Bsz), one workgroup per (b, h, chunk), nc > 1 only.

const WG = 256u;   // threads per workgroup
override CHUNK: u32 = 32u;   // L (= p.L), a pipeline constant so the token loops unroll
const MAX_L = 32u;           // register arrays hold a chunk: CHUNK <= MAX_L
override NQ: u32 = 1u;       // classes a state row's dims split into (1, 2 or 4)

// Params, bindings, dt/x/B/C reads, chunk_of, chunk_prep
//#include "lib/ssd_forward_common.wgsl"

fn TC() -> u32 { return 2u * CHUNK; }               // C tile [L, N]
fn TB() -> u32 { return TC() + CHUNK * p.N; }       // B tile [N, L]
fn TM() -> u32 { return TB() + CHUNK * p.N; }       // M [L, L]

// F1: S_c of this chunk into work (element (pp, n) at pp N + n), exp(cum_last) into work.
@compute @workgroup_size(WG)
fn ssd_chunk_states(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }   // uniform: depends on the workgroup only
  chunk_prep(ch, lid);
  let N = p.N;
  let len = ch.len;
  let last = sh[len - 1u];
  // the weights w_s = exp(cum_last - cum_s) dt_s over dt, and B's tile (as [L, N] here)
  for (var s = lid; s < len; s += WG) { sh[p.L + s] = exp(last - sh[s]) * sh[p.L + s]; }
  for (var e = lid; e < len * N; e += WG) { sh[TC() + e] = bv(ch.r0 + e / N, ch.g, e % N); }
  workgroupBarrier();
  let base = ((ch.b * p.nc + ch.c) * p.H + ch.h) * p.P * N;
  for (var e = lid; e < p.P * NQ; e += WG) {
    let pp = e / NQ;
    var wx: array<f32, MAX_L>;
    // to CHUNK, a pipeline constant, not len: the loops unroll and wx stays in registers
    for (var t = 0u; t < CHUNK; t++) {
      if (t < len) { wx[t] = sh[p.L + t] * xv(ch.r0 + t, ch.h, pp); }
    }
    for (var n = e % NQ; n < N; n += NQ) {
      var acc = 0.0;
      for (var t = 0u; t < CHUNK; t++) {
        if (t < len) { acc += wx[t] * sh[TC() + t * N + n]; }
      }
      work[p.w_s + base + pp * N + n] = acc;
    }
  }
  if (lid == 0u) { work[p.w_dec + (ch.b * p.nc + ch.c) * p.H + ch.h] = exp(last); }
}

// F3: y of this chunk's tokens from its start state hc[b, c, h] (written by the carry).
@compute @workgroup_size(WG)
fn ssd_chunk_out(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }
  chunk_prep(ch, lid);
  let N = p.N;
  let P = p.P;
  let L = CHUNK;
  let len = ch.len;
  for (var e = lid; e < len * N; e += WG) {
    let t = e / N;
    let n = e % N;
    sh[TC() + e] = cv(ch.r0 + t, ch.g, n);
    sh[TB() + n * L + t] = bv(ch.r0 + t, ch.g, n);
  }
  workgroupBarrier();
  // M[l, s] (0 for s > l): mask first, so exp() only of cum[l] - cum[s] <= 0
  for (var e = lid; e < len * len; e += WG) {
    let l = e / len;
    let s = e % len;
    var m = 0.0;
    if (s <= l) {
      var gsum = 0.0;
      for (var n = 0u; n < N; n++) { gsum += sh[TC() + l * N + n] * sh[TB() + n * L + s]; }
      m = gsum * exp(sh[l] - sh[s]) * sh[p.L + s];
    }
    sh[TM() + l * L + s] = m;
  }
  // thread (pp, q): its class's share of sum_n hc[pp, n] C_t[n] for every token t
  var ya: array<f32, MAX_L>;
  let busy = lid < P * NQ;
  if (busy) {
    let pp = lid / NQ;
    for (var t = 0u; t < CHUNK; t++) { ya[t] = 0.0; }
    let hb = (((ch.b * p.nc + ch.c) * p.H + ch.h) * P + pp) * N;
    for (var n = lid % NQ; n < N; n += NQ) {
      let a = hc[hb + n];
      for (var t = 0u; t < CHUNK; t++) {
        if (t < len) { ya[t] += a * sh[TC() + t * N + n]; }
      }
    }
  }
  workgroupBarrier();                     // the tiles are read: the shares go there
  if (busy) {
    for (var t = 0u; t < CHUNK; t++) { sh[TC() + lid * L + t] = ya[t]; }
  }
  workgroupBarrier();
  var D = 0.0;
  if (has(HAS_D)) { D = Dv[ch.h]; }
  // thread (t, pp), consecutive threads consecutive pp: x and y rows read and written whole
  for (var f = lid; f < len * P; f += WG) {
    let t = f / P;
    let pp = f % P;
    let r = ch.r0 + t;
    var acc = 0.0;
    for (var s = 0u; s <= t; s++) { acc += sh[TM() + t * L + s] * xv(ch.r0 + s, ch.h, pp); }
    var co = 0.0;
    for (var q = 0u; q < NQ; q++) { co += sh[TC() + (pp * NQ + q) * L + t]; }
    acc += exp(sh[t]) * co;
    y[p.y_off + r * p.y_str + ch.h * P + pp] = acc + D * xv(r, ch.h, pp);
  }
}
