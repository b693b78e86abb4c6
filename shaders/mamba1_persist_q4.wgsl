enable subgroups;
// A Mamba-1 decode layer in one dispatch, 4-bit weights with one f16 scale per group of 32
// (lib/weight_formats.wgsl's q4): a 16-byte chunk is one group; the kernel:
// lib/mamba1_persist.wgsl. Each matrix's scales follow its data in the same buffer.
//#include "lib/weight_formats.wgsl"
@group(0) @binding(3) var<storage, read> w_x: array<vec4<u32>>;      // in_proj's x half [I, D/32], scales
@group(0) @binding(4) var<storage, read> w_z: array<vec4<u32>>;      // in_proj's z half [I, D/32], scales
@group(0) @binding(5) var<storage, read> w_dt: array<vec4<u32>>;     // x_proj's dt rows [R, I/32], scales
@group(0) @binding(6) var<storage, read> w_b: array<vec4<u32>>;      // x_proj's B rows [N, I/32], scales
@group(0) @binding(7) var<storage, read> w_c: array<vec4<u32>>;      // x_proj's C rows [N, I/32], scales
@group(0) @binding(8) var<storage, read> w_out: array<vec4<u32>>;    // out_proj [D, I/32], scales

const CV = 8u;
alias Raw = vec4<u32>;

fn load_m(m: u32, i: u32) -> Raw {
  switch m {
    case 0u: { return w_x[i]; }
    case 1u: { return w_z[i]; }
    case 2u: { return w_dt[i]; }
    case 3u: { return w_b[i]; }
    case 4u: { return w_c[i]; }
    default: { return w_out[i]; }
  }
}

// Word i of matrix m's buffer, loaded alone (a scale pair: not the 16 bytes holding it).
fn load_word(m: u32, i: u32) -> u32 {
  switch m {
    case 0u: { return w_x[i / 4u][i % 4u]; }
    case 1u: { return w_z[i / 4u][i % 4u]; }
    case 2u: { return w_dt[i / 4u][i % 4u]; }
    case 3u: { return w_b[i / 4u][i % 4u]; }
    case 4u: { return w_c[i / 4u][i % 4u]; }
    default: { return w_out[i / 4u][i % 4u]; }
  }
}

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
