// Mat-vec with f32 weights read as vec4<f32> (16-byte chunks); the kernel: lib/matvec_rows.wgsl.
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;    // W_0 [N, K/4]
@group(0) @binding(5) var<storage, read> w1: array<vec4<f32>>;   // W_1 [N1, K/4]
@group(0) @binding(6) var<storage, read> w2: array<vec4<f32>>;   // W_2 [N2, K/4]

const CV = 1u;

fn load_chunk(g: u32, row: u32, c: u32) -> array<vec4<f32>, CV> {
  let i = row * (p.K / 4u) + c;
  switch g {
    case 0u: { return array<vec4<f32>, CV>(w[i]); }
    case 1u: { return array<vec4<f32>, CV>(w1[i]); }
    default: { return array<vec4<f32>, CV>(w2[i]); }
  }
}

//#include "lib/matvec_rows.wgsl"
