enable subgroups;
// A Mamba-1 decode layer in one dispatch, f16 weights two per u32 (16-byte chunks of eight;
// lib/weight_formats.wgsl's f16); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 2u;

fn raw_dot(q: Raw, c: u32) -> f32 {
  return dot(vec4<f32>(f16_pair(q.x), f16_pair(q.y)), xv(c, 0u)) +
         dot(vec4<f32>(f16_pair(q.z), f16_pair(q.w)), xv(c, 1u));
}

const SCALED = false;

fn scale_words(m: u32, row: u32, c: vec4<u32>) -> vec4<u32> { return vec4<u32>(); }
fn scales_of(sw: vec4<u32>, m: u32, row: u32, c: vec4<u32>) -> vec4<f32> { return vec4<f32>(1.0); }

//#include "lib/mamba1_persist.wgsl"
