// The body of Mamba-1's decode step with dt_proj folded in, shared by
// shaders/selective_scan_step.wgsl (workgroup-memory reductions) and
// shaders/selective_scan_step_sg.wgsl (their steps below the subgroup size as subgroup
// shuffles: `enable subgroups;` must open the file, so it is a file of its own). The including
// file defines `const SUBGROUPS: bool` and `fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32>`.
//#include "lib/selective_scan_common.wgsl"

@group(0) @binding(9) var<storage, read_write> y: array<f32>;       // [Bsz, I] view
@group(0) @binding(10) var<storage, read_write> hs: array<f32>;     // state [Bsz, I, N], in place
// The layer's parameters packed side by side at load (nn/mamba1.decode_param_packs,
// ops/weight_pack.pack_params) and read through ONE binding, their element offsets in Params'
// spare words: dt_proj.bias at _p1, A_log [I, N] at _p2, D at _p3, dt_proj.weight [I, R] at _p4.
// Each had a binding of its own until the thirty-fourth session (12 storage bindings, over the
// 10 a Mac's Chrome gives: there dt_proj ran as a dispatch of its own); now 9.
@group(0) @binding(3) var<storage, read> prm: array<f32>;

fn dt_bias_param(i: u32) -> f32 { return prm[p._p1 + i]; }
fn a_log_param(j: u32) -> f32 { return prm[p._p2 + j]; }
fn d_param(i: u32) -> f32 { return prm[p._p3 + i]; }
fn dtw(j: u32) -> f32 { return prm[p._p4 + j]; }               // dt_proj.weight[j / R, j % R]

// grid: (ceil(I / CPW), Bsz). A workgroup owns CPW channels, LANES threads per channel: the
// lanes split the dt_proj dot product (neighbouring lanes read neighbouring floats of row i:
// coalesced) and the N states (lane n owns state n), and meet through workgroup memory. One
// thread per channel, as before, read dt_w with a row stride between threads and ran R
// dependent loads each: 30 us per layer on an H200 at I = 4096, R = 128 (tools/profile_kernels).
// The low-rank width R rides in Params._p0 (unused elsewhere here).
const LANES = 16u;
const CPW = 8u;
var<workgroup> red_a: array<f32, 128>;   // LANES * CPW
var<workgroup> red_b: array<f32, 128>;

// Sum red_a (and red_b) over each channel's LANES lanes into lane 0's slot: the tree, step
// LANES/2 .. 1, lane l < step adding lane l + step. With SUBGROUPS (the including file's
// constant) the steps below the subgroup size sg are subgroup shuffles (shuffle_xor2): lane l
// adds lane l ^ step, for l < step lane l + step, the same additions in the same order (the
// same bits), two barriers instead of five at 16 lanes in a subgroup of 32. Uniform control flow.
fn reduce_lanes(lid: u32, lane: u32, sg: u32) {
  workgroupBarrier();
  var low = 1u;                  // steps >= low through workgroup memory
  if (SUBGROUPS) { low = max(sg, 1u); }
  var s = LANES / 2u;
  for (; s >= low; s >>= 1u) {
    if (lane < s) {
      red_a[lid] += red_a[lid + s];
      red_b[lid] += red_b[lid + s];
    }
    workgroupBarrier();
  }
  if (SUBGROUPS && s > 0u) {
    var v = vec2<f32>(red_a[lid], red_b[lid]);   // each lane its own slot: no barrier needed
    for (; s > 0u; s >>= 1u) { v += shuffle_xor2(v, s); }
    if (lane == 0u) {
      red_a[lid] = v.x;
      red_b[lid] = v.y;
    }
    workgroupBarrier();
  }
}

// x_proj folded into the previous dispatch (a pipeline constant; py_engine/ops/linear.py,
// in_proj_conv_xproj_step): that dispatch's workgroups left P shares of x_proj's outputs
// (dt_low [R], B [NS], C [NS]: O = R + 2 NS, Q = ceil(O / 4) vec4s) per sequence, each over its
// block of channels (lib/matvec_xproj.wgsl); every workgroup here sums them for its sequence
// into workgroup memory first, and reads dt_low, B and C there instead of bindings 2, 5 and 6.
override XPROJ: bool = false;
override XP_P: u32 = 1u;                 // shares per sequence
override XP_Q: u32 = 1u;                 // x_proj's outputs / 4, rounded up (O <= 512)
@group(0) @binding(14) var<storage, read> xpart: array<vec4<f32>>;   // shares [Bsz, P, Q]
var<workgroup> xo: array<vec4<f32>, 128>;       // the sequence's x_proj outputs [Q]
var<workgroup> xsplit: array<vec4<f32>, 128>;   // split s of vec4 q at [s * Q + q]

// xo = the sum of sequence b's shares. Thread lid sums vec4 q = lid % Q of shares s, s + S,
// s + 2S, ... (s = lid / Q, S = 128 / Q splits), eight loads issued before any is added (one
// memory wait per eight shares), then thread q adds the S splits in order. Uniform control flow.
fn xproj_sum(lid: u32, b: u32) {
  let S = 128u / XP_Q;
  let q = lid % XP_Q;
  let s = lid / XP_Q;
  var acc = vec4<f32>(0.0);
  if (s < S) {
    let base = b * XP_P * XP_Q + q;
    var k = s;
    for (; k + 7u * S < XP_P; k += 8u * S) {
      let v0 = xpart[base + k * XP_Q];
      let v1 = xpart[base + (k + S) * XP_Q];
      let v2 = xpart[base + (k + 2u * S) * XP_Q];
      let v3 = xpart[base + (k + 3u * S) * XP_Q];
      let v4 = xpart[base + (k + 4u * S) * XP_Q];
      let v5 = xpart[base + (k + 5u * S) * XP_Q];
      let v6 = xpart[base + (k + 6u * S) * XP_Q];
      let v7 = xpart[base + (k + 7u * S) * XP_Q];
      acc += v0; acc += v1; acc += v2; acc += v3;
      acc += v4; acc += v5; acc += v6; acc += v7;
    }
    for (; k < XP_P; k += S) { acc += xpart[base + k * XP_Q]; }
  }
  xsplit[lid] = acc;
  workgroupBarrier();
  if (lid < XP_Q) {
    var t = xsplit[lid];
    for (var j = 1u; j < S; j++) { t += xsplit[j * XP_Q + lid]; }
    xo[lid] = t;
  }
  workgroupBarrier();
}

fn xo_at(k: u32) -> f32 { return xo[k / 4u][k % 4u]; }

// dt_low[k] (at dl in binding 2), B[n] and C[n] (at off in bindings 5, 6), or from xo (XPROJ).
fn dlow(dl: u32, k: u32) -> f32 { if (XPROJ) { return xo_at(k); } return delta[dl + k]; }
fn b_at(off: u32, n: u32) -> f32 { if (XPROJ) { return xo_at(p._p0 + n); } return Bm[off + n]; }
fn c_at(off: u32, n: u32) -> f32 {
  if (XPROJ) { return xo_at(p._p0 + NS + n); }
  return Cm[off + n];
}

// 1/rms of row `off` of B (C) over N when NORM_BC (Falcon), else 1; every lane needs it.
fn rms_b(off: u32) -> f32 {
  if (!has(NORM_BC)) { return 1.0; }
  var ss = 0.0;
  for (var n = 0u; n < NS; n++) { let v = b_at(off, n); ss += v * v; }
  return inverseSqrt(ss / f32(NS) + p.eps);
}

fn rms_c(off: u32) -> f32 {
  if (!has(NORM_BC)) { return 1.0; }
  var ss = 0.0;
  for (var n = 0u; n < NS; n++) { let v = c_at(off, n); ss += v * v; }
  return inverseSqrt(ss / f32(NS) + p.eps);
}

// When the channel's own inputs load (a pipeline constant; MAMBAWEB_SCAN_STEP_EARLY, py_engine/
// ops/selective_scan.py): false, after the dt reduction (a memory wait for dt's terms, then one
// for these); true, before the dt loop, so one wait covers both. The same arithmetic in the
// same order either way: the same result bit for bit.
override EARLY: bool = false;

// The channel's inputs that do not depend on dt: u, D, z, and lane n's state, A, B and C
// (lane n owns state n: NS <= MAXN = 16 = LANES, py_engine/ops/selective_scan.py).
struct Inputs { u: f32, a_log: f32, h: f32, b: f32, c: f32, d: f32, z: f32 };

fn inputs_load(i: u32, b: u32, lane: u32) -> Inputs {
  var e: Inputs;
  e.u = u[p.u_off + b * p.u_str + i];
  if (lane < NS) {
    e.a_log = a_log_param(i * NS + lane);
    e.h = hs[(b * p.I + i) * NS + lane];
    e.b = b_at(p.b_off + b * p.b_str, lane);
    e.c = c_at(p.c_off + b * p.c_str, lane);
  }
  e.d = d_at(i);
  if (has(HAS_Z)) { e.z = z[p.z_off + b * p.z_str + i]; }
  return e;
}

// How the dt_proj terms load (a pipeline constant; MAMBAWEB_SCAN_STEP_TRIP8, py_engine/ops/
// selective_scan.py): false, four per lane at a time and then the rest one by one -- a memory
// wait per four terms and per leftover term (R = 48 at the 130m shape: three waits, one per
// term; R = 128 at 1.4b: two); true, eight per lane at a time, those past R neither loaded nor
// added -- one wait up to R = 8 * LANES. The same sums in the same order either way.
override DT_TRIP8: bool = false;

// The kernel, called by the entry point of selective_scan_step.wgsl (sg = 0) or
// selective_scan_step_sg.wgsl (sg: the subgroup size); a 128-thread workgroup, lid its index.
fn scan_step_dtproj(lid: u32, wid: vec3<u32>, sg: u32) {
  let lane = lid % LANES;
  let base = lid - lane;
  let i = wid.x * CPW + lid / LANES;
  let b = wid.y;
  let ok = i < p.I;
  let R = p._p0;
  var x = 0.0;
  var ss = 0.0;
  var e: Inputs;
  if (XPROJ) { xproj_sum(lid, b); }      // before any read of dt_low, B or C
  if (EARLY && ok) { e = inputs_load(i, b, lane); }
  if (ok) {
    // four of the lane's terms per trip, loaded before they are summed (a loop that loads and
    // then adds waits a memory latency per term); the sums keep the one-by-one order
    let dl = p.dl_off + b * p.dl_str;
    var k = lane;
    if (DT_TRIP8) {
      for (; k < R; k += 8u * LANES) {
        // the terms below R loaded before any is used, then added in k order: the loop
        // below's sums bit for bit. Named values, not an array: registers (lib/matvec_rows.wgsl's
        // xin says why).
        let wr = i * R;
        let d0 = dlow(dl, k);
        let w0 = dtw(wr + k);
        var d1 = 0.0; var w1 = 0.0; var d2 = 0.0; var w2 = 0.0;
        var d3 = 0.0; var w3 = 0.0; var d4 = 0.0; var w4 = 0.0;
        var d5 = 0.0; var w5 = 0.0; var d6 = 0.0; var w6 = 0.0;
        var d7 = 0.0; var w7 = 0.0;
        if (k + LANES < R) { d1 = dlow(dl, k + LANES); w1 = dtw(wr + k + LANES); }
        if (k + 2u * LANES < R) { d2 = dlow(dl, k + 2u * LANES); w2 = dtw(wr + k + 2u * LANES); }
        if (k + 3u * LANES < R) { d3 = dlow(dl, k + 3u * LANES); w3 = dtw(wr + k + 3u * LANES); }
        if (k + 4u * LANES < R) { d4 = dlow(dl, k + 4u * LANES); w4 = dtw(wr + k + 4u * LANES); }
        if (k + 5u * LANES < R) { d5 = dlow(dl, k + 5u * LANES); w5 = dtw(wr + k + 5u * LANES); }
        if (k + 6u * LANES < R) { d6 = dlow(dl, k + 6u * LANES); w6 = dtw(wr + k + 6u * LANES); }
        if (k + 7u * LANES < R) { d7 = dlow(dl, k + 7u * LANES); w7 = dtw(wr + k + 7u * LANES); }
        x += d0 * w0;
        ss += d0 * d0;
        if (k + LANES < R) { x += d1 * w1; ss += d1 * d1; }
        if (k + 2u * LANES < R) { x += d2 * w2; ss += d2 * d2; }
        if (k + 3u * LANES < R) { x += d3 * w3; ss += d3 * d3; }
        if (k + 4u * LANES < R) { x += d4 * w4; ss += d4 * d4; }
        if (k + 5u * LANES < R) { x += d5 * w5; ss += d5 * d5; }
        if (k + 6u * LANES < R) { x += d6 * w6; ss += d6 * d6; }
        if (k + 7u * LANES < R) { x += d7 * w7; ss += d7 * d7; }
      }
    }
    for (; k + 3u * LANES < R; k += 4u * LANES) {
      let d0 = dlow(dl, k);
      let d1 = dlow(dl, k + LANES);
      let d2 = dlow(dl, k + 2u * LANES);
      let d3 = dlow(dl, k + 3u * LANES);
      let w0 = dtw(i * R + k);
      let w1 = dtw(i * R + k + LANES);
      let w2 = dtw(i * R + k + 2u * LANES);
      let w3 = dtw(i * R + k + 3u * LANES);
      x += d0 * w0;
      ss += d0 * d0;
      x += d1 * w1;
      ss += d1 * d1;
      x += d2 * w2;
      ss += d2 * d2;
      x += d3 * w3;
      ss += d3 * d3;
    }
    for (; k < R; k += LANES) {
      let d = dlow(dl, k);
      x += d * dtw(i * R + k);
      ss += d * d;
    }
  }
  red_a[lid] = x;
  red_b[lid] = ss;
  reduce_lanes(lid, lane, sg);
  x = red_a[base];
  ss = red_b[base];
  // Falcon-Mamba normalises dt_low (weightless RMSNorm, eps as for B and C) before dt_proj
  if (has(NORM_BC)) { x *= inverseSqrt(ss / f32(R) + p.eps); }
  var acc = 0.0;
  var uu = 0.0;
  if (ok) {
    if (has(HAS_BIAS)) { x += dt_bias_param(i); }
    let dt = softplus(x);
    if (!EARLY) { e = inputs_load(i, b, lane); }
    uu = e.u;
    let sb = rms_b(p.b_off + b * p.b_str);
    let sc = rms_c(p.c_off + b * p.c_str);
    let dbu = dt * uu;
    if (lane < NS) {
      let a = -exp(e.a_log);
      let h = exp(dt * a) * e.h + dbu * e.b * sb;
      hs[(b * p.I + i) * NS + lane] = h;
      acc += e.c * sc * h;
    }
  }
  workgroupBarrier();          // every lane has read red_a[base] before it is overwritten
  red_a[lid] = acc;
  red_b[lid] = 0.0;
  reduce_lanes(lid, lane, sg);
  if (ok && lane == 0u) {
    var out = red_a[lid] + e.d * uu;
    if (has(HAS_Z)) { out *= silu(e.z); }
    y[p.y_off + b * p.y_str + i] = out;
  }
}
