// Mamba-2 SSD (state space duality) sequence forward: transformers' mamba2_chunk_scan, chunked
// and parallel over (batch, head, chunk). The one-token step is shaders/ssd_step.wgsl.
//
//   dt   = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)   softplus threshold 20  [Bsz,T,H]
//   A    = -exp(A_log[h])                                      one scalar per head
//   h_t  = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T                [P, N] per (b, h)
//   y_t  = h_t C_t + D x_t                                     (no gating: the gated norm is apart)
// Head h reads group g = h / (H / G) of B and C.
//
// Chunked form (chunk c covers tokens t0 = c L .. t0 + Lc - 1, Lc = min(L, T - t0)); inside a
// chunk cum[l] = sum_{k <= l} dt_k A (a chunk-local cumsum, non-increasing since dt A <= 0):
//   intra   y[l] += sum_{s <= l} (C_l . B_s) exp(cum[l] - cum[s]) dt_s x_s
//   states  S_c   = sum_s exp(cum[Lc-1] - cum[s]) dt_s x_s B_s^T      (chunk end state from 0)
//   carry   H_0 = h0,  H_{c+1} = exp(cum_c[Lc-1]) H_c + S_c            (serial over chunks)
//   output  y[l] += exp(cum[l]) H_c C_l  +  D x_l
// Stability (transformers' segment_sum): the decay between s <= l is the difference of a cumsum
// taken only where s <= l (masked first), so every exp() argument is <= 0 (f32 sums of
// non-positive terms are non-increasing) and the masked entries are 0, never exp(+large).
//
// Layout: token rows r = b*T + t. x [.., H*P], dt [.., H], B/C [.., G*N] and y [.., H*P] are
// "views" (element (r, j) at off + r*str + j), so x/B/C are read straight out of the conv
// output [x | B | C] and dt out of in_proj's output. States [Bsz, H, P, N]; chunk start states
// hc [Bsz, nc, H, P, N]; work: S [Bsz, nc, H, P, N] at w_s, chunk decays [Bsz, nc, H] at w_dec.
//
// Dispatches (nc = ceil(T / L)):
//   nc = 1: ssd_forward only (output from h0, then the final state in place; hc[:, 0] = h0 when
//           SAVE) - 1 dispatch.
//   nc > 1: F1 ssd_forward_chunk  grid (H, nc*Bsz): S_c and the chunk decay into work
//           F2 ssd_forward_carry  one thread per (b, h, p, n), serial over chunks: hc[c] = H_c,
//                                 final state in place into hs (which holds h0 or is unread)
//           F3 ssd_forward        grid (H, nc*Bsz): y from hc
// Real GPUs run F1 and F3 as shaders/ssd_chunked.wgsl (a chunk's work over 256 threads, B and C
// staged once; py_engine/ops/ssd.py path "parallel"), with this file's F2 between them.
// One workgroup of WG threads per (b, h, chunk). Workgroup memory sh (WS floats, sized by the
// host from maxComputeWorkgroupStorageSize): cum [L] | dt [L] | M tile [TL rows x <= L cols].
// F3 walks the chunk in row tiles of TL: the workgroup fills M[i, s] = (C_l . B_s) decay dt_s
// (each entry one thread, an N-long dot product), then each thread owns outputs (l, p) and sums
// M[i, :] x[:, p] in a fixed order: barriers only between tiles, no atomics, deterministic.
// Work: intra L^2/2 (N + P), states/output L P N per (b, h, chunk), as transformers' einsums.

const WG = 64u;   // threads per workgroup

// Params, bindings, dt/x/B/C reads, chunk_of, chunk_prep; WS here: 2 L + TL L floats
//#include "lib/ssd_forward_common.wgsl"

// Chunk end state from zero for element (pp, n), with weights w_s = exp(cum_last - cum_s) dt_s
// at sh[wo + s].
fn local_state(ch: Chunk, wo: u32, pp: u32, n: u32) -> f32 {
  var acc = 0.0;
  for (var s = 0u; s < ch.len; s++) {
    let r = ch.r0 + s;
    acc += sh[wo + s] * xv(r, ch.h, pp) * bv(r, ch.g, n);
  }
  return acc;
}

// F1: S_c into work, exp(cum_last) (the chunk's total decay) into work.
@compute @workgroup_size(WG)
fn ssd_forward_chunk(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }   // uniform: depends on the workgroup only
  chunk_prep(ch, lid);
  let last = sh[ch.len - 1u];
  for (var s = lid; s < ch.len; s += WG) { sh[p.L + s] = end_weight(s, last); }
  workgroupBarrier();
  let PN = p.P * p.N;
  let base = chunk_slot(ch) * PN;
  for (var e = lid; e < PN; e += WG) {
    work[p.w_s + base + e] = local_state(ch, p.L, e / p.N, e % p.N);
  }
  if (lid == 0u) { work[p.w_dec + chunk_slot(ch)] = exp(last); }
}

// F2: chunk start states, serial over chunks; one thread per (b, h, p, n). Eight chunks' S and
// decay are loaded before any is used: a loop that loads and then stores waits a memory latency
// a chunk (the stores to hc may alias the next loads as far as the compiler knows).
@compute @workgroup_size(WG)
fn ssd_forward_carry(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * WG;
  let PN = p.P * p.N;
  if (k >= p.nb * p.H * PN) { return; }
  let e = k % PN;
  let h = (k / PN) % p.H;
  let b = k / (PN * p.H);
  var H = 0.0;
  if (has(HAS_INIT)) { H = hs[k]; }
  var c = 0u;
  for (; c + 8u <= p.nc; c += 8u) {
    var d: array<f32, 8>;
    var s: array<f32, 8>;
    for (var u = 0u; u < 8u; u++) {
      let q = (b * p.nc + c + u) * p.H + h;
      d[u] = work[p.w_dec + q];
      s[u] = work[p.w_s + q * PN + e];
    }
    for (var u = 0u; u < 8u; u++) {
      hc[((b * p.nc + c + u) * p.H + h) * PN + e] = H;
      H = d[u] * H + s[u];
    }
  }
  for (; c < p.nc; c++) {
    let q = (b * p.nc + c) * p.H + h;
    let idx = q * PN + e;
    hc[idx] = H;
    H = work[p.w_dec + q] * H + work[p.w_s + idx];
  }
  hs[k] = H;
}

// Start state of this chunk, element (pp, n): hc[b, c, h] (nc > 1), else h0 in hs or 0.
fn start_state(ch: Chunk, pp: u32, n: u32) -> f32 {
  if (p.nc > 1u) { return hc[(chunk_slot(ch) * p.P + pp) * p.N + n]; }
  if (has(HAS_INIT)) { return hs[((ch.b * p.H + ch.h) * p.P + pp) * p.N + n]; }
  return 0.0;
}

// F3: outputs of one chunk (and, when nc = 1, the final state in place).
@compute @workgroup_size(WG)
fn ssd_forward(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid);
  if (!ch.ok) { return; }
  chunk_prep(ch, lid);
  let m0 = 2u * p.L;   // M tile offset in sh
  var D = 0.0;
  if (has(HAS_D)) { D = Dv[ch.h]; }
  let with_start = p.nc > 1u || has(HAS_INIT);
  for (var l0 = 0u; l0 < ch.len; l0 += p.TL) {
    let rows = min(p.TL, ch.len - l0);
    let cols = l0 + rows;   // sources s < cols; row i keeps s <= l0 + i (causal mask)
    for (var e = lid; e < rows * cols; e += WG) {
      let i = e / cols;
      let s = e % cols;
      let l = l0 + i;
      var m = 0.0;
      if (s <= l) {   // mask first: exp() only of cum[l] - cum[s] <= 0
        var gsum = 0.0;
        for (var n = 0u; n < p.N; n++) { gsum += cv(ch.r0 + l, ch.g, n) * bv(ch.r0 + s, ch.g, n); }
        m = m_entry(gsum, l, s);
      }
      sh[m0 + e] = m;
    }
    workgroupBarrier();
    for (var o = lid; o < rows * p.P; o += WG) {
      let i = o / p.P;
      let pp = o % p.P;
      let l = l0 + i;
      let r = ch.r0 + l;
      var acc = 0.0;
      for (var s = 0u; s <= l; s++) { acc += sh[m0 + i * cols + s] * xv(ch.r0 + s, ch.h, pp); }
      if (with_start) {
        var co = 0.0;
        for (var n = 0u; n < p.N; n++) { co += cv(r, ch.g, n) * start_state(ch, pp, n); }
        acc += exp(sh[l]) * co;
      }
      y[p.y_off + r * p.y_str + ch.h * p.P + pp] = acc + D * xv(r, ch.h, pp);
    }
    workgroupBarrier();
  }
  if (p.nc == 1u) {
    // Final state H = exp(cum_last) h0 + S, in place over h0: every read of hs above is done
    // (storageBarrier) before any thread writes it. Weights w_s go where the M tile was.
    let last = sh[ch.len - 1u];
    for (var s = lid; s < ch.len; s += WG) { sh[m0 + s] = end_weight(s, last); }
    storageBarrier();
    workgroupBarrier();
    let dec = exp(last);
    let PN = p.P * p.N;
    let base = (ch.b * p.H + ch.h) * PN;
    for (var e = lid; e < PN; e += WG) {
      var h0 = 0.0;
      if (has(HAS_INIT)) { h0 = hs[base + e]; }
      if (has(SAVE)) { hc[base + e] = h0; }
      hs[base + e] = dec * h0 + local_state(ch, m0, e / p.N, e % p.N);
    }
  }
}
