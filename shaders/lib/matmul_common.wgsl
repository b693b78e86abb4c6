// What matmul.wgsl and linear_backward.wgsl share (include with
// //#include "lib/matmul_common.wgsl"): the Params py_engine/ops/linear.py packs for both, and
// the bindings. C is [M, N] row-major; A and B are read through the strides in Params.

struct Params {
  M: u32, N: u32, K: u32, flags: u32,      // flags: bit0 add bias, bit1 accumulate into C
  sa0: u32, sa1: u32, sb0: u32, sb1: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // A, strides (sa0, sa1)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // B, strides (sb0, sb1)
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [N]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // C [M, N]
