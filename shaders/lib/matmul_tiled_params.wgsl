// What every tiled GEMM kernel shares (shaders/lib/matmul_tiled_body.wgsl's scalar-staged
// tiles and shaders/matmul_tiled_kk.wgsl's 16-byte-staged one): the Params, the split-K
// contract, a workgroup's K slice and the store of finished sums. The including file declares
// `c` (binding 4: C, or the split-K partials) and defines
//   fn put(i: u32, j: u32, x: f32)   C[i, j] from its finished sum x (bias, old C by flags)

struct Params {
  M: u32, N: u32, K: u32, flags: u32,      // flags: bit0 add bias, bit1 accumulate into C,
  sa0: u32, sa1: u32, sb0: u32, sb1: u32,  //        bit4 split-K partials (see below)
  ks: u32, N0: u32, N1: u32, _p2: u32,     // k per slice: workgroup z sums k in [z ks, (z+1) ks);
                                           // N0, N1: matmul_tiled_multi's first two blocks of columns
};

@group(0) @binding(0) var<uniform> p: Params;

// Split-K (products whose C has too few tiles to fill the GPU, e.g. x_proj's 160 columns):
// workgroup z writes its partial sum over its k slice, raw, to c[z, i, j]; matmul_split_reduce
// then adds the S partials (+ bias, + the old C) into the real C.
const SPLIT: u32 = 16u;

// Workgroup z's K slice [k0, kend).
fn k_range(z: u32) -> vec2<u32> {
  let k0 = z * p.ks;
  return vec2<u32>(k0, min(p.K, k0 + p.ks));
}

// C[i, j .. j+3] from the finished sums, for the columns inside N; nothing for a row past M.
// Split-K (flags SPLIT): slice z's raw partials at c[z, i, j] of the [S, M, N] partials instead.
// The split test is made once, outside the column loop, as in the fastest general form
// tools/gemm_explore measured (g16_put).
fn store4(z: u32, i: u32, j: u32, v: vec4<f32>) {
  if (i >= p.M) { return; }
  if ((p.flags & SPLIT) != 0u) {
    let o = z * p.M * p.N + i * p.N;
    for (var s = 0u; s < 4u; s++) {
      if (j + s >= p.N) { return; }
      c[o + j + s] = v[s];
    }
    return;
  }
  for (var s = 0u; s < 4u; s++) {
    if (j + s >= p.N) { return; }
    put(i, j + s, v[s]);
  }
}
