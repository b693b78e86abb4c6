enable subgroups;
// A Mamba-1 decode layer in one dispatch, int8 weights with one f32 scale per row
// (lib/weight_formats.wgsl's q8: 16-byte chunks of sixteen, a matrix's scales after its rows x
// K/4 words of data); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 4u;

fn raw_dot(q: Raw, c: u32) -> f32 {
  return dot(q8_quad(q.x), xv(c, 0u)) + dot(q8_quad(q.y), xv(c, 1u)) +
         dot(q8_quad(q.z), xv(c, 2u)) + dot(q8_quad(q.w), xv(c, 3u));
}

fn trip_scales(m: u32, row: u32, c: vec4<u32>) -> vec4<f32> {   // the row's scale, once
  return vec4<f32>(bitcast<f32>(load_word(m, mat_rows(m) * (mat_k(m) / 4u) + row)));
}

//#include "lib/mamba1_persist.wgsl"
