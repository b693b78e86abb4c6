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
const THREADS = 64u;
var<workgroup> red: array<f32, 512>;   // [THREADS / min subgroup size (1), ROWS] worst case

@compute @workgroup_size(64)
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
