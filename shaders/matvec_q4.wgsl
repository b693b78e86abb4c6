// Mat-vec with 4-bit weights, one f16 scale per group of 32 (lib/weight_formats.wgsl's q4): a
// 16-byte chunk is exactly one group; the kernel: lib/matvec_rows.wgsl. The scales follow the
// data in the same buffer (N*K/8 words of data: a whole number of vec4s since K % 32 == 0).
//#include "lib/weight_formats.wgsl"
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // W_0: [N, K/32], then N*K/32 f16 scales
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;   // W_1: [N1, K/32], then scales
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;   // W_2: [N2, K/32], then scales

const CV = 8u;
alias Raw = vec4<u32>;

fn wvec(g: u32, i: u32) -> vec4<u32> {
  switch g { case 0u: { return w[i]; } case 1u: { return w1[i]; } default: { return w2[i]; } }
}

fn load_raw(g: u32, row: u32, c: u32) -> Raw { return wvec(g, row * (p.K / 32u) + c); }

fn decode(q: Raw, g: u32, row: u32, c: u32) -> array<vec4<f32>, CV> {
  let groups = p.K / 32u;                            // = chunks per row
  let group = row * groups + c;
  let s = rows_of(g) * groups * 4u + group / 2u;     // the scale pair's word index
  let d = half_of(wvec(g, s / 4u)[s % 4u], (group & 1u) == 1u);
  return array<vec4<f32>, CV>(q4_low(q.x) * d, q4_high(q.x) * d, q4_low(q.y) * d, q4_high(q.y) * d,
                              q4_low(q.z) * d, q4_high(q.z) * d, q4_low(q.w) * d, q4_high(q.w) * d);
}

//#include "lib/matvec_rows.wgsl"
