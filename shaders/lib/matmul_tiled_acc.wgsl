// A tiled GEMM thread's block of C and its multiply-adds, shared by the 128 and 64 tiles of
// lib/matmul_tiled_body.wgsl and by shaders/matmul_tiled_kk.wgsl. Each tile's k loop over a
// staged slice is written out as one mac call per k, the staged cells indexed in the entry point
// with constant k: Tint (Chrome's WebGPU) puts a counter of its own into every loop (Dawn's guard
// against infinite loops), and the loop then reached NVIDIA's compiler in a form it did not
// unroll; indexed in the entry point, where its range analysis knows tx and ty
// (local_invocation_id) and k, robustness adds no clamp to the loads. On an H200, mamba-1.4b's
// in_proj at 1,024 tokens on the kk tile, loop / written out: through Dawn 1,539 / 1,200 us,
// natively (wgpu) 1,252 / 923 (`mambaweb bench --dawn --only prefill_gemm`, `--native`). The
// same additions in the same order (k = 0, 1, 2, ...): the same bits.
// Needs store4 (lib/matmul_tiled_params.wgsl).

// The 128 tile's 8 x 8 block: r<row>a holds columns tx*4 .. of row <row>, r<row>b columns
// 64 + tx*4 .. (named vec4s: an array would live in slow local memory).
struct Acc8 {
  r0a: vec4<f32>, r0b: vec4<f32>, r1a: vec4<f32>, r1b: vec4<f32>,
  r2a: vec4<f32>, r2b: vec4<f32>, r3a: vec4<f32>, r3b: vec4<f32>,
  r4a: vec4<f32>, r4b: vec4<f32>, r5a: vec4<f32>, r5b: vec4<f32>,
  r6a: vec4<f32>, r6b: vec4<f32>, r7a: vec4<f32>, r7b: vec4<f32>,
};

// One k of the 8 x 8 block: rows a0 (ty*4 ..) and a1 (64 + ty*4 ..), columns b0 and b1.
fn mac8(c: Acc8, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) -> Acc8 {
  var r = c;
  r.r0a += a0.x * b0; r.r0b += a0.x * b1;
  r.r1a += a0.y * b0; r.r1b += a0.y * b1;
  r.r2a += a0.z * b0; r.r2b += a0.z * b1;
  r.r3a += a0.w * b0; r.r3b += a0.w * b1;
  r.r4a += a1.x * b0; r.r4b += a1.x * b1;
  r.r5a += a1.y * b0; r.r5b += a1.y * b1;
  r.r6a += a1.z * b0; r.r6b += a1.z * b1;
  r.r7a += a1.w * b0; r.r7b += a1.w * b1;
  return r;
}

// The 8 x 8 block into C (or split-K slice z's partials): rows i0 + {0, 64} + ty*4 + 0..3,
// columns j0 + {0, 64} + tx*4 + 0..3.
fn store8(z: u32, i0: u32, j0: u32, tx: u32, ty: u32, c: Acc8) {
  let i = i0 + ty * 4u;
  let j = j0 + tx * 4u;
  store4(z, i, j, c.r0a);             store4(z, i, j + 64u, c.r0b);
  store4(z, i + 1u, j, c.r1a);        store4(z, i + 1u, j + 64u, c.r1b);
  store4(z, i + 2u, j, c.r2a);        store4(z, i + 2u, j + 64u, c.r2b);
  store4(z, i + 3u, j, c.r3a);        store4(z, i + 3u, j + 64u, c.r3b);
  store4(z, i + 64u, j, c.r4a);       store4(z, i + 64u, j + 64u, c.r4b);
  store4(z, i + 65u, j, c.r5a);       store4(z, i + 65u, j + 64u, c.r5b);
  store4(z, i + 66u, j, c.r6a);       store4(z, i + 66u, j + 64u, c.r6b);
  store4(z, i + 67u, j, c.r7a);       store4(z, i + 67u, j + 64u, c.r7b);
}

// The 64 tile's 4 x 4 block: r<row> holds columns tx*4 .. of row ty*4 + <row>.
struct Acc4 { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> };

fn mac4(c: Acc4, a0: vec4<f32>, b0: vec4<f32>) -> Acc4 {
  var r = c;
  r.r0 += a0.x * b0;
  r.r1 += a0.y * b0;
  r.r2 += a0.z * b0;
  r.r3 += a0.w * b0;
  return r;
}
