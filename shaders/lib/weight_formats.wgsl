// How narrow weight formats decode, as pure functions of the stored u32 words (no bindings),
// so the matvec kernels (shaders/matvec_<format>.wgsl), dequant.wgsl and quantize.wgsl agree.
// A weight W[N, K] (row-major) is one buffer of u32 words:
//   f16, bf16 : K/2 words per row, value k in the low half of word k/2 when k is even.
//   q8        : K/4 words per row, value k in byte k%4 (two's complement), then N f32 scales
//               (one per row, bitcast) at word N*K/4:  w = q * scale[row].
//   q4        : K/8 words per row, value k in nibble k%8 (lowest first) stored as q+8 (0..15),
//               then N*K/32 f16 scales (one per group of 32 along a row, two per word) at word
//               N*K/8:  w = (nibble - 8) * scale[group]  (GGUF Q4_0's rule).
// Shapes the kernels accept: K a multiple of 8 (f16, bf16), 16 (q8), 32 (q4); others stay f32.

fn f16_pair(word: u32) -> vec2<f32> { return unpack2x16float(word); }

fn bf16_pair(word: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

// q8 and q4 decode without an int -> float conversion (a quarter-rate instruction on NVIDIA; with
// the staged x, what we read as bounding the q4/q8 mat-vecs: 1.4b q8 reached f16's tok/s on an
// H200 after both): an unsigned integer u < 2^23 OR-ed into the mantissa of 2^23 is the float
// 2^23 + u exactly, so subtracting 2^23 + offset gives u - offset exactly (IEEE f32, no
// reassociation) -- f32(u) - offset bit for bit. q8's byte 0x80 now decodes to -128 (the old
// unpack4x8snorm path clamped it to -127), as q8_byte and dequant.wgsl do; quantize.wgsl never
// writes it.
const MAGIC = 0x4B000000u;                   // bits of 8388608.0 = 2^23

fn q8_quad(word: u32) -> vec4<f32> {
  // byte ^ 0x80 = q + 128 in 0..255 (q two's complement)
  let u = (vec4<u32>(word ^ 0x80808080u) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
  return bitcast<vec4<f32>>(u | vec4<u32>(MAGIC)) - 8388736.0;   // - (2^23 + 128)
}

fn q8_byte(word: u32, i: u32) -> f32 {
  return f32(extractBits(bitcast<i32>(word), 8u * i, 8u));
}

fn q4_low(word: u32) -> vec4<f32> {   // nibbles 0..3, stored q + 8
  let u = (vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
  return bitcast<vec4<f32>>(u | vec4<u32>(MAGIC)) - 8388616.0;     // - (2^23 + 8)
}

fn q4_high(word: u32) -> vec4<f32> {  // nibbles 4..7
  let u = (vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u);
  return bitcast<vec4<f32>>(u | vec4<u32>(MAGIC)) - 8388616.0;
}

fn q4_nibble(word: u32, i: u32) -> f32 { return f32((word >> (4u * i)) & 15u) - 8.0; }

fn half_of(word: u32, odd: bool) -> f32 {   // one f16 of a packed pair
  let v = unpack2x16float(word);
  return select(v.x, v.y, odd);
}
