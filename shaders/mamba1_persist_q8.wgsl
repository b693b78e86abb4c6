enable subgroups;
// A Mamba-1 decode layer in one dispatch, int8 weights with one f32 scale per row
// (lib/weight_formats.wgsl's q8), read 16 at a time; the kernel: lib/mamba1_persist.wgsl. Each
// matrix's scales follow its data in the same buffer (rows x K/4 words).
//#include "lib/weight_formats.wgsl"
@group(0) @binding(3) var<storage, read> w_x: array<vec4<u32>>;      // in_proj's x half [I, D/16], scales
@group(0) @binding(4) var<storage, read> w_z: array<vec4<u32>>;      // in_proj's z half [I, D/16], scales
@group(0) @binding(5) var<storage, read> w_dt: array<vec4<u32>>;     // x_proj's dt rows [R, I/16], scales
@group(0) @binding(6) var<storage, read> w_b: array<vec4<u32>>;      // x_proj's B rows [N, I/16], scales
@group(0) @binding(7) var<storage, read> w_c: array<vec4<u32>>;      // x_proj's C rows [N, I/16], scales
@group(0) @binding(8) var<storage, read> w_out: array<vec4<u32>>;    // out_proj [D, I/16], scales

const CV = 4u;
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

// Word i of matrix m's buffer, loaded alone (a scale: not the 16 bytes holding it).
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
  let x = 4u * c;
  return dot(q8_quad(q.x), xs[x]) + dot(q8_quad(q.y), xs[x + 1u]) +
         dot(q8_quad(q.z), xs[x + 2u]) + dot(q8_quad(q.w), xs[x + 3u]);
}

fn chunk_scale(m: u32, row: u32, c: u32) -> f32 {   // the row's scale
  return bitcast<f32>(load_word(m, mat_rows(m) * (mat_k(m) / 4u) + row));
}

//#include "lib/mamba1_persist.wgsl"
