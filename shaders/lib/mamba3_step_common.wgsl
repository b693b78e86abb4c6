// Mamba-3's one-token step (decode), shared by shaders/mamba3_step.wgsl (the per-token scalars
// from mamba3_prep's `pre`) and shaders/mamba3_step_folded.wgsl (the lanes step computing its own
// head's scalars from in_proj's raw columns: one dispatch fewer per layer). The including file
// defines, besides its bindings:
//   fn head_step(b: u32, h: u32) -> HeadStep    DT, alpha, beta, gamma and D of head h, sequence b
//   fn theta(b: u32, i: u32) -> f32             angle i's theta of sequence b
//   fn k_bias(h: u32, rk: u32, n: u32) -> f32   B_bias[h, rk, n]   (q_bias: C_bias)
//
//   phi = (phi + theta DT) mod 2pi;  k = rot(bn_val(g) + B_bias[h], phi), q = rot(cn_val(g) + C_bias[h], phi)
//   S   = alpha S + beta v_prev k_prev^T + gamma v k^T;  y = S q + D v;  v_prev, k_prev = v, k
// (DT, alpha, beta, gamma, theta, the packed parameters and MIMO's rank-R form: see
// mamba3_forward.wgsl; rotate_kq below is the same as there.)
//
// One workgroup of WG threads per (h, b), grid (H, Bsz): phi (threads over i < S), then k, q and
// the old k into workgroup memory (threads over n), then each thread owns state rows p and loops
// over n. Workgroup memory (WS = 3RN + S floats): k [R][N] | k_prev [R][N] | q [R][N] | phi [S].
// x [Bsz, *] view H*P wide, Bn/Cn [Bsz, *] views R*G*N wide, y [Bsz, *] view R*H*P wide.

// MIMO, MAX_R, WG, TWO_PI, WS and Params (the scans' fields unused here; the raw scalars'
// views dt_off .. an_str: mamba3_step_folded.wgsl's binding):
//#include "lib/mamba3_params.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
// The including file defines the token's inputs' reads, element i of the views at p.x_off,
// p.b_off, p.c_off: fn x_val(i: u32) -> f32 (x [Bsz, *] view, H*P wide), bn_val and cn_val
// (B and C [Bsz, *] views, R*G*N wide: normed, or raw with NORM_BC) -- through bindings of their
// own (mamba3_step.wgsl, mamba3_step_folded.wgsl) or through the raw scalars' one binding
// (mamba3_step_folded_one.wgsl, where in_proj wrote them all side by side).
@group(0) @binding(13) var<storage, read_write> y: array<f32>;  // [Bsz, *] view, R*H*P wide
@group(0) @binding(14) var<storage, read_write> s_ang: array<f32>; // [Bsz, H, S], in place
@group(0) @binding(15) var<storage, read_write> s_ssm: array<f32>; // [Bsz, H, P, N], in place
@group(0) @binding(16) var<storage, read_write> s_k: array<f32>;   // [Bsz, R, H, N], in place
@group(0) @binding(17) var<storage, read_write> s_v: array<f32>;   // [Bsz, H, P], in place

var<workgroup> sh: array<f32, WS>;

// B's and C's RMSNorm over N folded into mamba3_step_lanes (NORM_BC, SISO): Bn and Cn then hold
// the raw in_proj columns, and the workgroup normalises its group's row of each into sh after
// phi (B at [3N + S, 4N + S), C at [4N + S, 5N + S); the host sizes WS for them) as
// ops/rmsnorm.rmsnorm_forward would -- the same 64-lane sums in the same tree, x * (1/rms) * w
// -- two dispatches fewer per layer.
override NORM_BC: bool = false;
override NORM_EPS: f32 = 1e-5;          // the host passes the model's eps
// The including file defines the norms' weights (NORM_BC): fn b_normw(n: u32) -> f32 and
// c_normw, B_norm.weight[n] and C_norm.weight[n] (their own bindings, or the packed parameters).

fn b_in(bo: u32, n: u32) -> f32 {
  if (NORM_BC) { return sh[3u * p.N + p.S + n]; }
  return bn_val(bo + n);
}

fn c_in(co: u32, n: u32) -> f32 {
  if (NORM_BC) { return sh[4u * p.N + p.S + n]; }
  return cn_val(co + n);
}


// k_r (into sh[ko + r*N + n]) and q_r (into sh[2RN + r*N + n]) of batch row `row`, rotated by
// phi = sh[3RN ..]: pairs (2i, 2i+1) (SISO) or (i, i + N/2) (MIMO), i < S (as mamba3_forward.wgsl)
fn rotate_kq(row: u32, h: u32, g: u32, ko: u32, lid: u32) {
  let N = p.N;
  let RN = p.R * N;
  for (var e = lid; e < RN; e += WG) {
    let rk = e / N;
    let n = e % N;
    let bo = p.b_off + row * p.b_str + (rk * p.G + g) * N;
    let co = p.c_off + row * p.c_str + (rk * p.G + g) * N;
    let kb = b_in(bo, n) + k_bias(h, rk, n);
    let qb = c_in(co, n) + q_bias(h, rk, n);
    var kq = vec2<f32>(kb, qb);
    let q = pair_of(n, N);
    if (q.rot) {
      let kp = b_in(bo, q.m) + k_bias(h, rk, q.m);
      let qp = c_in(co, q.m) + q_bias(h, rk, q.m);
      kq = rotated(kb, qb, kp, qp, sin_cos(sh[3u * RN + q.i]), q.first);
    }
    sh[ko + e] = kq.x;
    sh[2u * RN + e] = kq.y;
  }
}

// The token's scalars of head h, sequence b (the includer's head_step).
struct HeadStep { dt: f32, alpha: f32, beta: f32, gamma: f32, Dh: f32 };

// The step's prologue, threads lid < WG of the workgroup (the others pass through; both parts
// are called by every thread, the barrier between them outside): the angles advanced and the
// old k into sh, then k and q rotated into sh and the k and angle states written.
fn prologue_load(b: u32, h: u32, dt: f32, lid: u32) {
  if (lid >= WG) { return; }
  let N = p.N;
  let S = p.S;
  let RN = p.R * N;
  let bh = b * p.H + h;
  for (var i = lid; i < S; i += WG) {   // each thread owns its angles
    let ph = s_ang[bh * S + i] + theta(b, i) * dt;
    sh[3u * RN + i] = wrap_angle(ph);
  }
  for (var e = lid; e < RN; e += WG) { sh[RN + e] = s_k[k_index(b, h, e)]; }
}

fn prologue_rotate(b: u32, h: u32, g: u32, lid: u32) {
  if (lid >= WG) { return; }
  rotate_kq(b, h, g, 0u, lid);
  write_k_angles(b, h, lid, WG);          // the old k was copied into sh[RN + e] before the barrier
}

// The new k (sh[0, RN)) and angles (sh[3RN, 3RN + S)) into the k and angle states, threads
// lid < step of the workgroup.
fn write_k_angles(b: u32, h: u32, lid: u32, step: u32) {
  let RN = p.R * p.N;
  for (var e = lid; e < RN; e += step) { s_k[k_index(b, h, e)] = sh[e]; }
  for (var i = lid; i < p.S; i += step) { s_ang[(b * p.H + h) * p.S + i] = sh[3u * RN + i]; }
}

// The SISO step with LANES threads per state row (real GPUs; py_engine/ops/mamba3.step_lanes):
// in mamba3_step thread p walks its own row s_ssm[b, h, p, :] -- neighbouring threads N floats
// apart, N dependent load/store pairs each, one 64-thread workgroup per head -- the pattern that
// held Mamba-2's step at a third of its speed on an H200 (ssd_step.wgsl). Here the same
// workgroup per (h, b) has 256 threads: the first WG of them run mamba3_step's prologue (angles,
// k, q into workgroup memory, the k and angle states written); RPW rows a pass, lane l of a row
// takes n = l, l + LANES, ... (consecutive floats). A head's P rows are MAXP passes (64 rows at
// P <= 64) and each lane's states MAXJ (N <= 128) held in registers at once: the first round's
// states, x and old v are loaded before the prologue (nothing in them waits for it), so the
// whole step waits on one round of state loads and one lane tree for all its rows -- it used to
// run P / RPW passes one after another, each a load round and a 5-level tree (19 us a dispatch
// at mamba3-187m on an H200 through Dawn, a third of the token). Same math per state as
// mamba3_step; y's sum over n in the same order as before (n ascending a lane, then the tree).
const LANES = 32u;
const RPW = 8u;                                 // rows per pass of the 256 threads
const MAXP = 8u;                                // passes a round (their rows' states in registers)
const MAXJ = 4u;                                // states a lane holds per row a round
const LANES_RED = MAXP * 256u;                  // the round's lane trees side by side (2048)
var<workgroup> red: array<f32, LANES_RED>;      // ops/mamba3.lanes_fit counts it

// The sums of a and c over threads 0..63 (the others pass 0), every thread gets both:
// lib/reduce.wgsl's workgroup_sum64 tree, on red[0, 64) and red[64, 128) at once, so a folded
// norm sums as rmsnorm_forward does.
fn sum64_pair(lid: u32, a: f32, c: f32) -> vec2<f32> {
  if (lid < 64u) {
    red[lid] = a;
    red[64u + lid] = c;
  }
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) {
      red[lid] += red[lid + s];
      red[64u + lid] += red[64u + lid + s];
    }
    workgroupBarrier();
  }
  let total = vec2<f32>(red[0], red[64]);
  workgroupBarrier();
  return total;
}

// B's and C's rows of group g normalised into sh (NORM_BC: [3N + S, 4N + S) and [4N + S, 5N + S)),
// 256 threads; call from uniform control flow (barriers inside).
fn norm_bc_into_sh(b: u32, g: u32, lid: u32) {
  let N = p.N;
  let S = p.S;
  let bo = p.b_off + b * p.b_str + g * N;
  let co = p.c_off + b * p.c_str + g * N;
  var sb = 0.0;
  var sc = 0.0;
  if (lid < 64u) {
    for (var j = lid; j < N; j += 64u) {
      let vb = bn_val(bo + j);
      sb += vb * vb;
      let vc = cn_val(co + j);
      sc += vc * vc;
    }
  }
  let sums = sum64_pair(lid, sb, sc);
  let rb = inverseSqrt(sums.x / f32(N) + NORM_EPS);
  let rc = inverseSqrt(sums.y / f32(N) + NORM_EPS);
  for (var j = lid; j < N; j += 256u) {
    sh[3u * N + S + j] = bn_val(bo + j) * rb * b_normw(j);
    sh[4u * N + S + j] = cn_val(co + j) * rc * c_normw(j);
  }
  workgroupBarrier();
}

// The SISO step's prologue for a 256-thread workgroup of head h, sequence b (group g): B's and C's
// norms where folded, the angles advanced by dt, k and q rotated into sh (k [0, N) | k_prev
// [N, 2N) | q [2N, 3N)) and the k and angle states written. Uniform control flow (barriers).
fn siso_prologue(b: u32, h: u32, g: u32, dt: f32, lid: u32) {
  if (NORM_BC) { norm_bc_into_sh(b, g, lid); }   // uniform: a pipeline constant
  prologue_load(b, h, dt, lid);           // mamba3_step's prologue (R = 1), WG threads
  workgroupBarrier();
  prologue_rotate(b, h, g, lid);
  workgroupBarrier();
}

// siso_prologue without writing the k and angle states (mamba3_step_rows_last: one workgroup of
// the head writes them once every workgroup has read the old ones).
fn siso_prologue_read_only(b: u32, h: u32, g: u32, dt: f32, lid: u32) {
  if (NORM_BC) { norm_bc_into_sh(b, g, lid); }
  prologue_load(b, h, dt, lid);
  workgroupBarrier();
  if (lid < WG) { rotate_kq(b, h, g, 0u, lid); }
  workgroupBarrier();
}

// A round's states of this thread: hs[i * MAXJ + jj] = s_ssm[b, h, row (r0 + i) * RPW + slot,
// state (j0 + jj) * LANES + lane] (0 past P or N).
fn load_states(bh: u32, r0: u32, j0: u32, slot: u32, lane: u32,
               hs: ptr<function, array<f32, 32>>) {
  for (var i = 0u; i < MAXP; i++) {
    let pp = (r0 + i) * RPW + slot;
    for (var jj = 0u; jj < MAXJ; jj++) {
      let n = (j0 + jj) * LANES + lane;
      var v = 0.0;
      if (pp < p.P && n < p.N) { v = s_ssm[(bh * p.P + pp) * p.N + n]; }
      (*hs)[i * MAXJ + jj] = v;
    }
  }
}

// A round's rows' inputs: xs[i] = x_val(b, h, row), vs[i] = the row's old v (0 past P).
fn load_rows(b: u32, h: u32, bh: u32, r0: u32, slot: u32,
             xs: ptr<function, array<f32, 8>>, vs: ptr<function, array<f32, 8>>) {
  for (var i = 0u; i < MAXP; i++) {
    let pp = (r0 + i) * RPW + slot;
    var xv = 0.0;
    var vv = 0.0;
    if (pp < p.P) {
      xv = x_val(p.x_off + b * p.x_str + h * p.P + pp);
      vv = s_v[bh * p.P + pp];
    }
    (*xs)[i] = xv;
    (*vs)[i] = vv;
  }
}

// The lanes step of head h, sequence b (a 256-thread workgroup; the includer's entry point checks
// h < H, b < nb first).
fn lanes_step(h: u32, b: u32, lid: u32) {
  let N = p.N;
  let S = p.S;
  let P = p.P;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  let lane = lid % LANES;
  let slot = lid / LANES;
  let passes = (P + RPW - 1u) / RPW;       // uniform: every thread runs every round
  let J = (N + LANES - 1u) / LANES;        // states a lane walks in a row
  var hs: array<f32, 32>;                  // [MAXP][MAXJ]
  var xs: array<f32, 8>;
  var vs: array<f32, 8>;
  load_states(bh, 0u, 0u, slot, lane, &hs);
  load_rows(b, h, bh, 0u, slot, &xs, &vs);
  let t = head_step(b, h);
  siso_prologue(b, h, g, t.dt, lid);
  // sh: k [0, N) | k_prev [N, 2N) | q [2N, 3N)
  var acc: array<f32, 8>;
  for (var r0 = 0u; r0 < passes; r0 += MAXP) {
    if (r0 > 0u) { load_rows(b, h, bh, r0, slot, &xs, &vs); }
    // zeroed here: declared inside the loop (zero each pass, as WGSL says), the native backend
    // (naga, lavapipe) kept the last round's sums -- tests/unit/test_mamba3_step_lanes_native.py
    for (var i = 0u; i < MAXP; i++) { acc[i] = 0.0; }
    for (var j0 = 0u; j0 < J; j0 += MAXJ) {
      if (r0 > 0u || j0 > 0u) { load_states(bh, r0, j0, slot, lane, &hs); }
      for (var i = 0u; i < MAXP; i++) {
        let pp = (r0 + i) * RPW + slot;
        if (pp < P) {
          let bv = t.beta * vs[i];
          let gv = t.gamma * xs[i];
          let base = (bh * P + pp) * N;
          for (var jj = 0u; jj < MAXJ; jj++) {
            let n = (j0 + jj) * LANES + lane;
            if (n < N) {
              let s = t.alpha * hs[i * MAXJ + jj] + (bv * sh[N + n] + gv * sh[n]);
              s_ssm[base + n] = s;
              acc[i] += s * sh[2u * N + n];
            }
          }
        }
      }
    }
    for (var i = 0u; i < MAXP; i++) { red[i * 256u + lid] = acc[i]; }
    workgroupBarrier();                    // every lane has read s_v of its rows
    for (var st = LANES / 2u; st > 0u; st >>= 1u) {
      if (lane < st) {
        for (var i = 0u; i < MAXP; i++) { red[i * 256u + lid] += red[i * 256u + lid + st]; }
      }
      workgroupBarrier();
    }
    if (lane == 0u) {
      for (var i = 0u; i < MAXP; i++) {
        let pp = (r0 + i) * RPW + slot;
        if (pp < P) {
          s_v[bh * P + pp] = xs[i];
          y[p.y_off + b * p.y_str + h * P + pp] = red[i * 256u + lid] + t.Dh * xs[i];
        }
      }
    }
    workgroupBarrier();                    // red is rewritten by the next round
  }
}
