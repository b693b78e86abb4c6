enable subgroups;
// A Mamba-1 decode layer in one dispatch, f32 weights (16-byte chunks of four); the kernel:
// lib/mamba1_persist.wgsl.
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 1u;

fn raw_dot(q: Raw, c: u32) -> f32 { return dot(bitcast<vec4<f32>>(q), xv(c, 0u)); }

const SCALED = false;

fn scale_words(m: u32, row: u32, c: vec4<u32>) -> vec4<u32> { return vec4<u32>(); }
fn scales_of(sw: vec4<u32>, m: u32, row: u32, c: vec4<u32>) -> vec4<f32> { return vec4<f32>(1.0); }

//#include "lib/mamba1_persist.wgsl"
