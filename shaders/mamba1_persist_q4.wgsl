enable subgroups;
// A Mamba-1 decode layer in one dispatch, 4-bit weights with one f16 scale per group of 32
// (lib/weight_formats.wgsl's q4: a 16-byte chunk is one group, a matrix's scales after its
// rows x K/8 words of data); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
//#include "lib/mamba1_persist_weights.wgsl"

const CV = 8u;

fn raw_dot(q: Raw, c: u32) -> f32 {
  let x = 8u * c;
  return dot(q4_low(q.x), xs[x]) + dot(q4_high(q.x), xs[x + 1u]) +
         dot(q4_low(q.y), xs[x + 2u]) + dot(q4_high(q.y), xs[x + 3u]) +
         dot(q4_low(q.z), xs[x + 4u]) + dot(q4_high(q.z), xs[x + 5u]) +
         dot(q4_low(q.w), xs[x + 6u]) + dot(q4_high(q.w), xs[x + 7u]);
}

fn chunk_scale(m: u32, row: u32, c: u32) -> f32 {   // the chunk's group's f16 scale
  let groups = mat_k(m) / 32u;                       // = chunks a row
  let group = row * groups + c;
  return half_of(load_word(m, mat_rows(m) * groups * 4u + group / 2u), (group & 1u) == 1u);
}

//#include "lib/mamba1_persist.wgsl"
