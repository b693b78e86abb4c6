enable subgroups;
// y[m, j] (+)= sum_k x[m, k] * W[j, k] (+ bias[j]) for few rows m (decode: M = 1).
// Bandwidth-bound: every weight is read once per token, so the 64 threads of a workgroup
// read 64 consecutive k of the same row (coalesced), keep ROWS partial sums each, and reduce
// with subgroupAdd plus one shared-memory step across subgroups. This is the layout that
// read ~3 TB/s on an H100 and the fastest one on SwiftShader (DESIGN.md).

struct Params { M: u32, N: u32, K: u32, flags: u32 };   // flags: bit0 bias, bit1 accumulate

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const ROWS = 8u;
// Threads per workgroup (a pipeline override): more threads per 8 rows hide memory latency
// on big GPUs, where a decode-sized matrix gives only N/8 workgroups.
override THREADS: u32 = 256u;
var<workgroup> red: array<f32, THREADS * ROWS>;   // [THREADS / subgroup size, ROWS] at most

@compute @workgroup_size(THREADS)
fn matvec_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(subgroup_size) sg: u32, @builtin(subgroup_invocation_id) sid: u32) {
  let j0 = (wid.x + wid.y * nwg.x) * ROWS;
  if (j0 >= p.N) { return; }
  let nsub = THREADS / sg;
  let last = p.N - 1u;
  for (var m = 0u; m < p.M; m++) {
    // Zeroed explicitly: a loop-body `var` was seen to keep its value across iterations
    // on SwiftShader (the row-1 result came out as row 0 + row 1).
    var acc: array<f32, 8>;
    for (var r = 0u; r < ROWS; r++) { acc[r] = 0.0; }
    for (var k = lid; k < p.K; k += THREADS) {
      let xv = x[m * p.K + k];
      for (var r = 0u; r < ROWS; r++) {
        acc[r] += w[min(j0 + r, last) * p.K + k] * xv;
      }
    }
    for (var r = 0u; r < ROWS; r++) {
      let s = subgroupAdd(acc[r]);
      if (sid == 0u) { red[(lid / sg) * ROWS + r] = s; }
    }
    workgroupBarrier();
    if (lid < ROWS && j0 + lid < p.N) {
      var s = 0.0;
      for (var i = 0u; i < nsub; i++) { s += red[i * ROWS + lid]; }
      let j = j0 + lid;
      if ((p.flags & 1u) != 0u) { s += bias[j]; }
      let idx = m * p.N + j;
      if ((p.flags & 2u) != 0u) { s += y[idx]; }
      y[idx] = s;
    }
    workgroupBarrier();
  }
}

// --- several products of the same x in one dispatch -----------------------------------
// y_g[m, j] = sum_k x[m, k] * W_g[j, k] for g < G (G <= 3), e.g. in_proj's x and z halves,
// or x_proj's dt, B and C rows, which the engine stores as separate matrices. Workgroup
// (x, z): rows 8x..8x+7 of matrix z. Saves 1-2 dependent dispatches per use when decoding.

struct MultiParams { M: u32, K: u32, G: u32, _p: u32, N0: u32, N1: u32, N2: u32, _q: u32 };

@group(0) @binding(0) var<uniform> q: MultiParams;
@group(0) @binding(5) var<storage, read> w1: array<f32>;
@group(0) @binding(6) var<storage, read> w2: array<f32>;
@group(0) @binding(7) var<storage, read_write> y1: array<f32>;
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;

fn rows_of(g: u32) -> u32 {
  switch g { case 0u: { return q.N0; } case 1u: { return q.N1; } default: { return q.N2; } }
}

fn wload(g: u32, idx: u32) -> f32 {
  switch g { case 0u: { return w[idx]; } case 1u: { return w1[idx]; } default: { return w2[idx]; } }
}

fn ystore(g: u32, idx: u32, v: f32) {
  switch g { case 0u: { y[idx] = v; } case 1u: { y1[idx] = v; } default: { y2[idx] = v; } }
}

@compute @workgroup_size(THREADS)
fn matvec_multi_forward(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(subgroup_size) sg: u32, @builtin(subgroup_invocation_id) sid: u32) {
  let g = wid.z;
  let N = rows_of(g);
  let j0 = wid.x * ROWS;
  if (g >= q.G || j0 >= N) { return; }
  let nsub = THREADS / sg;
  let last = N - 1u;
  for (var m = 0u; m < q.M; m++) {
    var acc: array<f32, 8>;
    for (var r = 0u; r < ROWS; r++) { acc[r] = 0.0; }
    for (var k = lid; k < q.K; k += THREADS) {
      let xv = x[m * q.K + k];
      for (var r = 0u; r < ROWS; r++) {
        acc[r] += wload(g, min(j0 + r, last) * q.K + k) * xv;
      }
    }
    for (var r = 0u; r < ROWS; r++) {
      let s = subgroupAdd(acc[r]);
      if (sid == 0u) { red[(lid / sg) * ROWS + r] = s; }
    }
    workgroupBarrier();
    if (lid < ROWS && j0 + lid < N) {
      var s = 0.0;
      for (var i = 0u; i < nsub; i++) { s += red[i * ROWS + lid]; }
      ystore(g, m * N + j0 + lid, s);
    }
    workgroupBarrier();
  }
}
