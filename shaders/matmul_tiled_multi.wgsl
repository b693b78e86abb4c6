// The tiled GEMM (shaders/matmul_tiled.wgsl) over up to three weights that share the input:
//
//   Y_g[i, j] (+)= sum_k A[i*sa0 + k*sa1] * W_g[j, k]        g < 3, Y_g is [M, N_g]
//
// computed as ONE product whose C has the G weights' rows side by side as its columns
// (N = N0 + N1 + N2): column j < N0 is row j of W_0, the next N1 columns W_1's rows, the rest
// W_2's. Each Y_g gets its own block of columns. Prefill reads x_proj's dt|B|C rows (160 at
// mamba-1.4b; 16 for B and for C) and in_proj's x|z halves this way: one dispatch where three
// (or two) products each left the GPU short of tiles and wrote and re-read split-K partials of
// their own. A column's sums are the separate product's, in the same order when the K slices
// are the same (py_engine/ops/linear.py picks them for the whole N).
// Weights are read as W^T (sb0 = 1, sb1 = K); no bias. flags bit1 accumulates into Y_g (the K
// windows of a loop-pass-capped driver), bit4 (SPLIT) writes slice z's raw partials to the
// combined [S, M, N] at binding 4 instead, and matmul_split_reduce (the body's, through put
// below) adds them up into Y_g.

//#include "lib/matmul_tiled_body.wgsl"

@group(0) @binding(2) var<storage, read> b: array<f32>;          // W_0 [N0, K]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // Y_0 [M, N0]; split: [S, M, N]
@group(0) @binding(5) var<storage, read> b1: array<f32>;         // W_1 [N1, K]
@group(0) @binding(6) var<storage, read> b2: array<f32>;         // W_2 [N - N0 - N1, K]
@group(0) @binding(7) var<storage, read_write> c1: array<f32>;   // Y_1 [M, N1]
@group(0) @binding(8) var<storage, read_write> c2: array<f32>;   // Y_2 [M, N - N0 - N1]

// Which weight column j belongs to, and its row there.
struct Col { g: u32, r: u32 };

fn col(j: u32) -> Col {
  if (j < p.N0) { return Col(0u, j); }
  if (j < p.N0 + p.N1) { return Col(1u, j - p.N0); }
  return Col(2u, j - p.N0 - p.N1);
}

// B[k, j] = W_g[r, k]. A tile's columns lie in one weight wherever N0 and N1 are multiples of
// its width (in_proj's halves), so the branch is uniform across the tile there.
fn load_b(cl: vec2<u32>, l: u32, j0: u32, k0: u32, kend: u32) -> f32 {
  let j = j0 + cl.x + l;
  let k = k0 + cl.y;
  if (j >= p.N || k >= kend) { return 0.0; }
  let w = col(j);
  let idx = k * p.sb0 + w.r * p.sb1;
  switch w.g {
    case 0u: { return b[idx]; }
    case 1u: { return b1[idx]; }
    default: { return b2[idx]; }
  }
}

fn yload(g: u32, idx: u32) -> f32 {
  switch g { case 0u: { return c[idx]; } case 1u: { return c1[idx]; } default: { return c2[idx]; } }
}

fn ystore(g: u32, idx: u32, v: f32) {
  switch g { case 0u: { c[idx] = v; } case 1u: { c1[idx] = v; } default: { c2[idx] = v; } }
}

// Columns of weight g.
fn width(g: u32) -> u32 {
  switch g { case 0u: { return p.N0; } case 1u: { return p.N1; } default: { return p.N - p.N0 - p.N1; } }
}

// Y_g[i, r] (+)= x for the column j = (g, r).
fn put(i: u32, j: u32, x: f32) {
  let w = col(j);
  let idx = i * width(w.g) + w.r;
  var v = x;
  if ((p.flags & 2u) != 0u) { v += yload(w.g, idx); }
  ystore(w.g, idx, v);
}
