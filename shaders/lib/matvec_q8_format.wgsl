// The q8 weight format of the decode mat-vec (lib/matvec_rows.wgsl) and of Mamba-1's folded
// x_proj (lib/matvec_xproj.wgsl): bindings, chunk loads, their values and scales. Included by
// shaders/matvec_q8.wgsl and shaders/matvec_q8_gather.wgsl.
//#include "lib/weight_formats.wgsl"
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // W_0: [N, K/16], then [N] scales
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;   // W_1: [N1, K/16], then [N1]
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;   // W_2: [N2, K/16], then [N2]

const CV = 4u;
alias Raw = vec4<u32>;

fn wvec(g: u32, i: u32) -> vec4<u32> {
  switch g { case 0u: { return w[w0() + i]; } case 1u: { return w1[i]; } default: { return w2[i]; } }
}

fn load_raw(g: u32, row: u32, c: u32) -> Raw { return wvec(g, row * (p.K / 16u) + c); }

fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 {
  return dot(q8_quad(q.x), xin(xo, no)) + dot(q8_quad(q.y), xin(xo + 1u, no + 1u)) +
         dot(q8_quad(q.z), xin(xo + 2u, no + 2u)) + dot(q8_quad(q.w), xin(xo + 3u, no + 3u));
}

fn chunk_scale(g: u32, row: u32, c: u32) -> f32 {   // the row's scale
  let s = rows_of(g) * (p.K / 4u) + row;            // its word index
  return bitcast<f32>(wvec(g, s / 4u)[s % 4u]);
}

// Mamba-1's x_proj folded into the conv block's store (lib/matvec_xproj.wgsl): its three row
// blocks (each its int8 rows, then its row scales) packed side by side at load, all through
// binding 6 (W_2): dt from its start, B's from chunk XB_OFF, C's from XC_OFF.
fn piece_raw(b: u32, i: u32) -> Raw {
  switch b { case 0u: { return w2[i]; } case 1u: { return w2[XB_OFF + i]; } default: { return w2[XC_OFF + i]; } }
}

fn raw_vals(q: Raw, v: u32) -> vec4<f32> { return q8_quad(q[v]); }

// Row `row`'s scale of block b: after the block's rows (p.N / 16 chunks each).
fn piece_row_scale(b: u32, row: u32) -> f32 {
  let word = xproj_scales_at(b, p.N / 16u) * 4u + row;
  return bitcast<f32>(w2[word / 4u][word % 4u]);
}
fn piece_chunk_scale(b: u32, row: u32, c: u32) -> f32 { return 1.0; }   // no chunk scales
