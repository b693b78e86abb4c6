// Mamba-2 SSD one-token step (decode): transformers' mamba2_selective_state_update, dt softplus
// and clamp, D skip fused, the state updated in place. The sequence form is ssd_forward.wgsl.
//
//   dt   = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)   softplus threshold 20  [Bsz, H]
//   h    = exp(dt A) h + dt x B^T,  A = -exp(A_log[h])          state [Bsz, H, P, N]
//   y    = h C + D x                                            [Bsz, H*P]
// Head h reads group g = h / (H / G) of B and C ([Bsz, G*N]).
//
// Two forms, 1 dispatch each; every state element is read and written once. ssd_step: one thread
// owns one (b, h, p) row of the state and loops over n -- no barriers, no workgroup memory, grid
// (ceil(H*P / 64), Bsz); software adapters run it. ssd_step_lanes (below): 32 threads a row,
// coalesced; real GPUs run it.
// x, dt, B, C and y are views (element (b, j) at off + b*str + j): x/B/C straight out of the
// conv step's [x | B | C] output, dt out of in_proj's.

const HAS_BIAS = 1u;
const HAS_D = 2u;
const HAS_DT_MIN = 16u;
const HAS_DT_MAX = 32u;

struct Params {
  H: u32, P: u32, N: u32, G: u32,
  nb: u32, flags: u32, dt_min: f32, dt_max: f32,
  x_off: u32, x_str: u32, dt_off: u32, dt_str: u32,   // x, dt views
  b_off: u32, b_str: u32, c_off: u32, c_str: u32,     // B, C views
  y_off: u32, y_str: u32, _p0: u32, _p1: u32,         // y view
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [Bsz, *] view, H*P wide
@group(0) @binding(2) var<storage, read> dtm: array<f32>;        // [Bsz, *] view, H wide (raw dt)
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;    // [H]
@group(0) @binding(4) var<storage, read> A_log: array<f32>;      // [H]
@group(0) @binding(5) var<storage, read> Bm: array<f32>;         // [Bsz, *] view, G*N wide
@group(0) @binding(6) var<storage, read> Cm: array<f32>;         // [Bsz, *] view, G*N wide
@group(0) @binding(7) var<storage, read> Dv: array<f32>;         // [H]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;    // [Bsz, *] view, H*P wide
@group(0) @binding(9) var<storage, read_write> state: array<f32>; // [Bsz, H, P, N], in place

// softplus (threshold 20, exact log1p) and sigmoid, shared with the other kernels:
//#include "lib/activations.wgsl"

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }


// What state row j (= h * P + p) of sequence b needs, whichever kernel walks it: the decay
// dA = exp(dt A), dt * x, where its state, B and C start, its D skip and where y goes.
struct Row { dA: f32, dtx: f32, skip: f32, base: u32, bo: u32, co: u32, yi: u32 };

fn row_of(j: u32, b: u32) -> Row {
  let h = j / p.P;
  let g = h / (p.H / p.G);
  var v = dtm[p.dt_off + b * p.dt_str + h];
  if (has(HAS_BIAS)) { v += dt_bias[h]; }
  var dt = softplus(v);
  if (has(HAS_DT_MIN)) { dt = max(dt, p.dt_min); }
  if (has(HAS_DT_MAX)) { dt = min(dt, p.dt_max); }
  let xx = x[p.x_off + b * p.x_str + j];
  var r: Row;
  r.dA = exp(dt * -exp(A_log[h]));
  r.dtx = dt * xx;
  r.skip = 0.0;
  if (has(HAS_D)) { r.skip = Dv[h] * xx; }
  r.base = (b * p.H * p.P + j) * p.N;
  r.bo = p.b_off + b * p.b_str + g * p.N;
  r.co = p.c_off + b * p.c_str + g * p.N;
  r.yi = p.y_off + b * p.y_str + j;
  return r;
}

@compute @workgroup_size(64)
fn ssd_step(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;            // h * P + p
  let b = gid.y;
  if (j >= p.H * p.P || b >= p.nb) { return; }
  let r = row_of(j, b);
  var acc = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let s = r.dA * state[r.base + n] + r.dtx * Bm[r.bo + n];
    state[r.base + n] = s;
    acc += s * Cm[r.co + n];
  }
  y[r.yi] = acc + r.skip;
}

// The same step with LANES threads per state row (real GPUs; py_engine/ops/ssd.step_lanes): in
// ssd_step thread j walks its own row state[b, h, p, :], so neighbouring threads read N floats
// apart (N = 128: a cache line per thread per load) and each thread runs N dependent
// load/store pairs; with H*P / 64 workgroups (24 for Mamba-2 130m) most of the GPU idles. Here
// lane l of a row takes n = l, l + LANES, ...: a warp's loads are consecutive floats; the
// row's partial sums of y meet in a workgroup-memory tree. RPW rows per workgroup; grid
// (ceil(H*P / RPW), Bsz). Every lane recomputes the row's dt (cheaper than sharing it).
const LANES = 32u;
const RPW = 8u;                               // rows per 256-thread workgroup
var<workgroup> red: array<f32, 256>;          // LANES * RPW partial sums

@compute @workgroup_size(256)
fn ssd_step_lanes(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let lane = lid % LANES;
  let j = wid.x * RPW + lid / LANES;          // h * P + p
  let b = wid.y;
  let live = j < p.H * p.P;                   // the last workgroup's spare rows: no loads
  var acc = 0.0;
  var r: Row;
  if (live) {
    r = row_of(j, b);
    let dA = r.dA;
    let dtx = r.dtx;
    let base = r.base;
    let bo = r.bo;
    let co = r.co;
    // four states per trip, all loaded before any is stored (a store waiting for its value
    // holds later loads behind it: one memory latency per state otherwise); same sum order
    var n = lane;
    for (; n + 3u * LANES < p.N; n += 4u * LANES) {
      let h0 = state[base + n];
      let h1 = state[base + n + LANES];
      let h2 = state[base + n + 2u * LANES];
      let h3 = state[base + n + 3u * LANES];
      let b0 = Bm[bo + n];
      let b1 = Bm[bo + n + LANES];
      let b2 = Bm[bo + n + 2u * LANES];
      let b3 = Bm[bo + n + 3u * LANES];
      let c0 = Cm[co + n];
      let c1 = Cm[co + n + LANES];
      let c2 = Cm[co + n + 2u * LANES];
      let c3 = Cm[co + n + 3u * LANES];
      let s0 = dA * h0 + dtx * b0;
      let s1 = dA * h1 + dtx * b1;
      let s2 = dA * h2 + dtx * b2;
      let s3 = dA * h3 + dtx * b3;
      state[base + n] = s0;
      state[base + n + LANES] = s1;
      state[base + n + 2u * LANES] = s2;
      state[base + n + 3u * LANES] = s3;
      acc += s0 * c0;
      acc += s1 * c1;
      acc += s2 * c2;
      acc += s3 * c3;
    }
    for (; n < p.N; n += LANES) {
      let s = dA * state[base + n] + dtx * Bm[bo + n];
      state[base + n] = s;
      acc += s * Cm[co + n];
    }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  if (live && lane == 0u) { y[r.yi] = red[lid] + r.skip; }
}
