// Mamba-1 selective scan, sequence forward, "lanes" variant for real GPUs: the same F1 and F3
// as selective_scan_forward.wgsl (same Params, flags, bindings, chunk layout; F2, the carry,
// and the backward are unchanged there), but LANES = 16 threads per channel instead of one,
// lane n owning state n as a scalar register (the decode kernel selective_scan_step.wgsl does
// the same). One thread per (b, i, c) kept h in an `array<f32, MAXN>` indexed in loops, which
// real GPUs tend to spill to local memory, and ran 16 dependent exp/FMA chains per token.
//
// grid: (ceil(I / CPW), nc * Bsz). A workgroup owns CPW channels x LANES lanes of one (b, c)
// and walks its chunk in blocks of TB = 16 tokens:
//   fetch  (registers) thread e of the workgroup: elements e and e + 128 of the block's B (and
//          C) rows [16 tokens x 16], coalesced, 0 past N and past the chunk; thread (token k,
//          channel j2) that token's delta and u (and z) -- issued one block ahead, so the loads
//          are in flight while the lanes walk the current block
//   stage  the fetched block into workgroup memory, dt = softplus(delta + dt_bias) and dt*u
//          computed once per (token, channel), not per lane
//   [norm] NORM_BC (Falcon): threads 0..15 RMS-normalise B row k, threads 16..31 C row k
//   walk   lane n of channel j: h = exp(dt A[i,n]) h + dt u B[t,n] per token; F3 also writes
//          C[t,n] h into red[token, channel, n]
//   reduce F3: thread (token k, channel j2) sums red over the N lanes in order n = 0..N-1 (the
//          classic kernel's order), adds D u, gates with silu(z), writes y
// so a block costs 2 barriers (3 with NORM_BC) for 16 tokens, not a reduction tree per token.
// Lanes n >= N keep h = 0 (B = C = 0 there): N < 16 just leaves lanes idle.
//
// Loop passes of the busiest invocation (lavapipe's cap, shaders/LOOP_BUDGET.md), per block of
// 16 tokens, none counted as unrolled: block loop 1, norm 2 (N + 1), walk 17, reduce N + 1
// -> at most 3 (N + 1) + 18 = 69 at N 16, i.e. < 5 per token (the classic F3 makes N + 2 per
// token); py_engine/ops/selective_scan.py: lanes_loop_passes.

//#include "lib/selective_scan_common.wgsl"
//#include "lib/selective_scan_params.wgsl"

@group(0) @binding(9) var<storage, read_write> y: array<f32>;       // [Bsz, T, I] view
@group(0) @binding(10) var<storage, read_write> hs: array<f32>;     // state [Bsz,I,N] (in place) or hc

const LANES = 16u;      // = MAXN: lane n owns state n
const CPW = 8u;         // channels per workgroup
const WG = 128u;        // CPW * LANES threads; TB * LANES = 2 * WG elements of B (C) per block
const TB = 16u;         // tokens per block
const RS = 17u;         // row stride of red (odd: the reduce reads are free of bank conflicts)

var<workgroup> sB: array<f32, 256>;     // [TB, LANES] B rows of the block (normed when NORM_BC)
var<workgroup> sC: array<f32, 256>;     // [TB, LANES] C rows
var<workgroup> sdt: array<f32, 128>;    // [TB, CPW] dt
var<workgroup> sdbu: array<f32, 128>;   // [TB, CPW] dt * u
var<workgroup> red: array<f32, 2176>;   // [TB * CPW, RS]: C[t,n] h_t[n], lane n at column n

// The workgroup's (b, c) and token span: from workgroup_id only, so the block loop and its
// barriers stay in uniform control flow (Tint tracks a struct as a whole).
struct Chunk { b: u32, c: u32, t0: u32, t1: u32 };

fn chunk_of(wid: vec3<u32>) -> Chunk {
  var g: Chunk;
  g.c = wid.y % p.nc;
  g.b = wid.y / p.nc;
  g.t0 = g.c * p.L;
  g.t1 = min(g.t0 + p.L, p.T);
  return g;
}

struct Lanes {
  j: u32, n: u32, i: u32, ok: bool,       // walk: channel j of the group, state n; ok: a real state
  k: u32, j2: u32, i2: u32, ok2: bool,    // per token: token k of the block, channel j2
};

fn lanes_of(lid: u32, wid: vec3<u32>) -> Lanes {
  var l: Lanes;
  l.j = lid / LANES;
  l.n = lid % LANES;
  l.i = wid.x * CPW + l.j;
  l.ok = l.i < p.I && l.n < NS;
  l.k = lid / CPW;
  l.j2 = lid % CPW;
  l.i2 = wid.x * CPW + l.j2;
  l.ok2 = l.i2 < p.I;
  return l;
}

// One block as fetched into registers: B (C) elements lid and lid + WG of [TB, LANES], and
// delta, u, z of (token k, channel j2).
struct Fetched { b0: f32, b1: f32, c0: f32, c1: f32, dl: f32, uu: f32, zz: f32 };

fn lane_a(l: Lanes) -> f32 {
  if (l.ok) { return -exp(A_log[l.i * NS + l.n]); }
  return 0.0;
}

fn b_elem(b: u32, tb: u32, kk: u32, e: u32) -> f32 {
  let k = e / LANES;
  let n = e % LANES;
  if (k < kk && n < NS) { return Bm[p.b_off + (b * p.T + tb + k) * p.b_str + n]; }
  return 0.0;
}

fn c_elem(b: u32, tb: u32, kk: u32, e: u32) -> f32 {
  let k = e / LANES;
  let n = e % LANES;
  if (k < kk && n < NS) { return Cm[p.c_off + (b * p.T + tb + k) * p.c_str + n]; }
  return 0.0;
}

// Tokens tb .. tb+kk-1 of sequence b: B, delta, u (F1 and F3).
fn fetch_b(b: u32, l: Lanes, lid: u32, tb: u32, kk: u32) -> Fetched {
  var f: Fetched;
  f.b0 = b_elem(b, tb, kk, lid);
  f.b1 = b_elem(b, tb, kk, lid + WG);
  f.c0 = 0.0;
  f.c1 = 0.0;
  f.dl = 0.0;
  f.uu = 0.0;
  f.zz = 0.0;
  if (l.k < kk && l.ok2) {
    let r = b * p.T + tb + l.k;
    f.dl = delta[p.dl_off + r * p.dl_str + l.i2];
    f.uu = u[p.u_off + r * p.u_str + l.i2];
  }
  return f;
}

// ... and C and z (F3 only: F1 binds neither).
fn fetch_cz(f0: Fetched, b: u32, l: Lanes, lid: u32, tb: u32, kk: u32) -> Fetched {
  var f = f0;
  f.c0 = c_elem(b, tb, kk, lid);
  f.c1 = c_elem(b, tb, kk, lid + WG);
  if (has(HAS_Z) && l.k < kk && l.ok2) {
    f.zz = z[p.z_off + (b * p.T + tb + l.k) * p.z_str + l.i2];
  }
  return f;
}

// Stage B, dt and dt*u of a fetched block (padding tokens and channels: dt = u = 0).
fn stage_b(f: Fetched, l: Lanes, lid: u32, kk: u32) {
  sB[lid] = f.b0;
  sB[lid + WG] = f.b1;
  var x = f.dl;
  if (has(HAS_BIAS) && l.ok2) { x += dt_bias[l.i2]; }
  var dt = 0.0;
  if (l.ok2 && l.k < kk) { dt = softplus(x); }
  sdt[l.k * CPW + l.j2] = dt;
  sdbu[l.k * CPW + l.j2] = dt * f.uu;
}

fn stage_c(f: Fetched, lid: u32) {
  sC[lid] = f.c0;
  sC[lid + WG] = f.c1;
}

// Falcon's weightless RMSNorm over N of B row `lid` (threads 0..15), as lib's load_b does.
fn norm_b(lid: u32) {
  if (lid < TB) {
    var ss = 0.0;
    for (var n = 0u; n < NS; n++) { let v = sB[lid * LANES + n]; ss += v * v; }
    let s = inverseSqrt(ss / f32(NS) + p.eps);
    for (var n = 0u; n < NS; n++) { sB[lid * LANES + n] *= s; }
  }
}

// The same for C row lid - 16 (threads 16..31).
fn norm_c(lid: u32) {
  if (lid >= TB && lid < 2u * TB) {
    let k = lid - TB;
    var ss = 0.0;
    for (var n = 0u; n < NS; n++) { let v = sC[k * LANES + n]; ss += v * v; }
    let s = inverseSqrt(ss / f32(NS) + p.eps);
    for (var n = 0u; n < NS; n++) { sC[k * LANES + n] *= s; }
  }
}

// Token k of the staged block for lane n of channel j: h_k = exp(dt a) h_{k-1} + dt u B[k, n],
// and (F3) C[k, n] h_k into red. A whole block's 16 calls are written out, as the GEMM tiles'
// k loops are (lib/matmul_tiled_acc.wgsl): Tint (Chrome's WebGPU) puts a counter of its own
// into every loop, and a loop whose trip count the compiler cannot see keeps each token's
// loads behind the last one's; written out, its loads need not wait for the exp/FMA chain. The
// same operations in the same order (the same bits). Measured only with the tiles' change, across
// two H200 calls (mamba-1.4b f32 prefill at 1,024 tokens natively 10,870 → 11,238 tok/s with
// the scalar tile's loop written out as well), not apart.
fn walk3(h: f32, a: f32, k: u32, j: u32, n: u32) -> f32 {
  let q = k * CPW + j;
  let hn = exp(sdt[q] * a) * h + sdbu[q] * sB[k * LANES + n];
  red[q * RS + n] = sC[k * LANES + n] * hn;
  return hn;
}

// F1's token k: s = (h, sum of dt so far).
fn walk1(s: vec2<f32>, a: f32, k: u32, j: u32, n: u32) -> vec2<f32> {
  let q = k * CPW + j;
  let dt = sdt[q];
  return vec2<f32>(exp(dt * a) * s.x + sdbu[q] * sB[k * LANES + n], s.y + dt);
}

// The 16 lanes' terms of one (token, channel) summed in lane order, written out (as walk3 is:
// a loop keeps each load behind the last add through Tint's loop guard); the loop's sum bit for
// bit. RED16: MAMBAWEB_SCAN_RED16 (bench variants; py_engine/ops/selective_scan.py).
override RED16: bool = true;

fn red16(base: u32) -> f32 {
  let r0 = red[base];       let r1 = red[base + 1u];  let r2 = red[base + 2u];
  let r3 = red[base + 3u];  let r4 = red[base + 4u];  let r5 = red[base + 5u];
  let r6 = red[base + 6u];  let r7 = red[base + 7u];  let r8 = red[base + 8u];
  let r9 = red[base + 9u];  let r10 = red[base + 10u]; let r11 = red[base + 11u];
  let r12 = red[base + 12u]; let r13 = red[base + 13u]; let r14 = red[base + 14u];
  let r15 = red[base + 15u];
  var acc = 0.0;
  acc += r0; acc += r1; acc += r2; acc += r3; acc += r4; acc += r5; acc += r6; acc += r7;
  acc += r8; acc += r9; acc += r10; acc += r11; acc += r12; acc += r13; acc += r14; acc += r15;
  return acc;
}

// F3 (lanes): run chunk c of channels wid.x*CPW.. of sequence b from the start state, writing y
// (and the final state when WRITE_FINAL and this is the last chunk).
@compute @workgroup_size(128)
fn selective_scan_forward_lanes(@builtin(local_invocation_id) lid3: vec3<u32>,
                                @builtin(workgroup_id) wid: vec3<u32>) {
  let lid = lid3.x;
  let g = chunk_of(wid);
  let l = lanes_of(lid, wid);
  let a = lane_a(l);
  var h = 0.0;
  if (l.ok && (p.nc > 1u || has(HAS_INIT))) { h = hs[sidx(g.b, g.c, l.i, l.n)]; }
  var D = 0.0;
  if (l.ok2) { D = d_at(l.i2); }
  let nblk = (g.t1 - g.t0 + TB - 1u) / TB;
  var f = fetch_cz(fetch_b(g.b, l, lid, g.t0, min(TB, g.t1 - g.t0)), g.b, l, lid, g.t0,
                   min(TB, g.t1 - g.t0));
  for (var blk = 0u; blk < nblk; blk++) {
    let tb = g.t0 + blk * TB;
    let kk = min(TB, g.t1 - tb);
    stage_b(f, l, lid, kk);
    stage_c(f, lid);
    let uu = f.uu;
    let zz = f.zz;
    workgroupBarrier();
    if (has(NORM_BC)) {
      norm_b(lid);
      norm_c(lid);
      workgroupBarrier();
    }
    if (blk + 1u < nblk) {     // the next block's loads, in flight during this block's walk
      let tn = tb + TB;
      let kn = min(TB, g.t1 - tn);
      f = fetch_cz(fetch_b(g.b, l, lid, tn, kn), g.b, l, lid, tn, kn);
    }
    if (kk == TB) {            // a whole block: its 16 tokens written out (walk3 says why)
      h = walk3(h, a, 0u, l.j, l.n);
      h = walk3(h, a, 1u, l.j, l.n);
      h = walk3(h, a, 2u, l.j, l.n);
      h = walk3(h, a, 3u, l.j, l.n);
      h = walk3(h, a, 4u, l.j, l.n);
      h = walk3(h, a, 5u, l.j, l.n);
      h = walk3(h, a, 6u, l.j, l.n);
      h = walk3(h, a, 7u, l.j, l.n);
      h = walk3(h, a, 8u, l.j, l.n);
      h = walk3(h, a, 9u, l.j, l.n);
      h = walk3(h, a, 10u, l.j, l.n);
      h = walk3(h, a, 11u, l.j, l.n);
      h = walk3(h, a, 12u, l.j, l.n);
      h = walk3(h, a, 13u, l.j, l.n);
      h = walk3(h, a, 14u, l.j, l.n);
      h = walk3(h, a, 15u, l.j, l.n);
    } else {
      for (var k = 0u; k < kk; k++) { h = walk3(h, a, k, l.j, l.n); }
    }
    workgroupBarrier();
    if (l.k < kk && l.ok2) {
      let base = (l.k * CPW + l.j2) * RS;
      var acc = 0.0;
      if (NS == 16u && RED16) { acc = red16(base); } else {
        for (var n = 0u; n < NS; n++) { acc += red[base + n]; }
      }
      var out = acc + D * uu;
      if (has(HAS_Z)) { out *= silu(zz); }
      y[p.y_off + (g.b * p.T + tb + l.k) * p.y_str + l.i2] = out;
    }
    // the next block stages into sB / sC / sdt / sdbu only, which every lane has read before
    // the barrier above; its walk writes red only after its own staging barrier
  }
  if (has(WRITE_FINAL) && g.c + 1u == p.nc && l.ok) { hs[sidx(g.b, g.c, l.i, l.n)] = h; }
}

// F1 (lanes): local end state of chunk c from zero, and the sum of dt over the chunk.
// work: S at w_hs, sdt at w_sdt (as selective_scan_forward_chunk).
@compute @workgroup_size(128)
fn selective_scan_forward_chunk_lanes(@builtin(local_invocation_id) lid3: vec3<u32>,
                                      @builtin(workgroup_id) wid: vec3<u32>) {
  let lid = lid3.x;
  let g = chunk_of(wid);
  let l = lanes_of(lid, wid);
  let a = lane_a(l);
  var h = 0.0;
  var sum_dt = 0.0;
  let nblk = (g.t1 - g.t0 + TB - 1u) / TB;
  var f = fetch_b(g.b, l, lid, g.t0, min(TB, g.t1 - g.t0));
  for (var blk = 0u; blk < nblk; blk++) {
    let tb = g.t0 + blk * TB;
    let kk = min(TB, g.t1 - tb);
    stage_b(f, l, lid, kk);
    workgroupBarrier();
    if (has(NORM_BC)) {
      norm_b(lid);
      workgroupBarrier();
    }
    if (blk + 1u < nblk) {
      let tn = tb + TB;
      f = fetch_b(g.b, l, lid, tn, min(TB, g.t1 - tn));
    }
    var hs_dt = vec2<f32>(h, sum_dt);
    if (kk == TB) {            // a whole block: its 16 tokens written out (walk3 says why)
      hs_dt = walk1(hs_dt, a, 0u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 1u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 2u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 3u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 4u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 5u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 6u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 7u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 8u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 9u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 10u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 11u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 12u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 13u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 14u, l.j, l.n);
      hs_dt = walk1(hs_dt, a, 15u, l.j, l.n);
    } else {
      for (var k = 0u; k < kk; k++) { hs_dt = walk1(hs_dt, a, k, l.j, l.n); }
    }
    h = hs_dt.x;
    sum_dt = hs_dt.y;
    workgroupBarrier();   // every lane has read sB / sdt / sdbu before the next block stages
  }
  if (l.ok) { work[p.w_hs + sidx(g.b, g.c, l.i, l.n)] = h; }
  if (l.n == 0u && l.i < p.I) { work[p.w_sdt + (g.b * p.nc + g.c) * p.I + l.i] = sum_dt; }
}
