// The f16 weight format of the decode mat-vec and of Mamba-1's folded x_proj: two f16
// values a u32 (lib/matvec_pair_format.wgsl). Included by shaders/matvec_f16.wgsl and
// shaders/matvec_f16_gather.wgsl.
//#include "lib/weight_formats.wgsl"
fn pair(word: u32) -> vec2<f32> { return f16_pair(word); }
//#include "lib/matvec_pair_format.wgsl"
