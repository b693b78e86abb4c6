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

const SCALED = true;

// The row's scale (the word after the matrix's rows x K/4 words of data), for each chunk.
fn scale_words(m: u32, row: u32, c: vec4<u32>) -> vec4<u32> {
  return vec4<u32>(mat_rows(m) * (mat_k(m) / 4u) + row);
}

fn scales_of(sw: vec4<u32>, m: u32, row: u32, c: vec4<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(sw);
}

//#include "lib/mamba1_persist.wgsl"
