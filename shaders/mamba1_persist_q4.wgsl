enable subgroups;
// A Mamba-1 decode layer in one dispatch, 4-bit weights with one f16 scale per group of 32
// (lib/weight_formats.wgsl's q4: a 16-byte chunk is one group, a matrix's scales after its
// rows x K/8 words of data); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 8u;

fn raw_dot(q: Raw, c: u32) -> f32 {
  return dot(q4_low(q.x), xv(c, 0u)) + dot(q4_high(q.x), xv(c, 1u)) +
         dot(q4_low(q.y), xv(c, 2u)) + dot(q4_high(q.y), xv(c, 3u)) +
         dot(q4_low(q.z), xv(c, 4u)) + dot(q4_high(q.z), xv(c, 5u)) +
         dot(q4_low(q.w), xv(c, 6u)) + dot(q4_high(q.w), xv(c, 7u));
}

const SCALED = true;

// The words holding the chunks' groups' f16 scales (chunk c of a row is its group c; two
// scales a word after the matrix's rows x K/8 words of data), and the halves they are.
fn scale_words(m: u32, row: u32, c: vec4<u32>) -> vec4<u32> {
  let groups = mat_k(m) / 32u;                       // = chunks a row
  return vec4<u32>(mat_rows(m) * groups * 4u) + (vec4<u32>(row * groups) + c) / 2u;
}

fn scales_of(sw: vec4<u32>, m: u32, row: u32, c: vec4<u32>) -> vec4<f32> {
  let odd = ((vec4<u32>(row * (mat_k(m) / 32u)) + c) & vec4<u32>(1u)) == vec4<u32>(1u);
  return vec4<f32>(half_of(sw.x, odd.x), half_of(sw.y, odd.y), half_of(sw.z, odd.z),
                   half_of(sw.w, odd.w));
}

//#include "lib/mamba1_persist.wgsl"
