enable subgroups;
// Mat-vec with int8 weights and one f32 scale per row (lib/weight_formats.wgsl's q8), read 16
// at a time; the kernel: lib/matvec_rows.wgsl. The scales follow the data in the same buffer
// (N*K/4 words of data: a whole number of vec4s since K % 16 == 0).
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

//#include "lib/matvec_y2.wgsl"
//#include "lib/matvec_rows.wgsl"
