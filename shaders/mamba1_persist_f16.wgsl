enable subgroups;
// A Mamba-1 decode layer in one dispatch, f16 weights two per u32 (16-byte chunks of eight;
// lib/weight_formats.wgsl's f16); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 2u;

fn raw_dot(q: Raw, c: u32) -> f32 {
  return dot(vec4<f32>(f16_pair(q.x), f16_pair(q.y)), xs[2u * c]) +
         dot(vec4<f32>(f16_pair(q.z), f16_pair(q.w)), xs[2u * c + 1u]);
}

fn chunk_scale(m: u32, row: u32, c: u32) -> f32 { return 1.0; }

//#include "lib/mamba1_persist.wgsl"
