enable subgroups;
// Mat-vec with f32 weights read as vec4<f32> (16-byte chunks); the kernel: lib/matvec_rows.wgsl.
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;    // W_0 [N, K/4]
@group(0) @binding(5) var<storage, read> w1: array<vec4<f32>>;   // W_1 [N1, K/4]
@group(0) @binding(6) var<storage, read> w2: array<vec4<f32>>;   // W_2 [N2, K/4]

const CV = 1u;
alias Raw = vec4<f32>;

fn load_raw(g: u32, row: u32, c: u32) -> Raw {
  let i = row * (p.K / 4u) + c;
  switch g { case 0u: { return w[i]; } case 1u: { return w1[i]; } default: { return w2[i]; } }
}

fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 { return dot(q, xin(xo, no)); }

fn chunk_scale(g: u32, row: u32, c: u32) -> f32 { return 1.0; }

//#include "lib/matvec_rows.wgsl"
