// Widen 16-bit weights to f32 on the GPU, so checkpoint bytes go fetch -> GPU untouched.
//   bf16: the high half of an f32, so widening is a shift (exact).
//   f16 : unpack2x16float (exact; needs no shader-f16 feature, which SwiftShader lacks).
// src holds the raw little-endian 16-bit values packed two per u32; out[i] is value i.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 256u; }

fn half_bits(i: u32) -> u32 {
  let word = src[i / 2u];
  return select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
}

@compute @workgroup_size(256)
fn bf16_to_f32_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = bitcast<f32>(half_bits(i) << 16u);
}

@compute @workgroup_size(256)
fn f16_to_f32_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = unpack2x16float(half_bits(i)).x;
}
