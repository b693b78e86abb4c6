enable subgroups;
// A Mamba-1 decode layer in one dispatch, f16 weights two per u32, read 8 at a time
// (lib/weight_formats.wgsl's f16); the kernel: lib/mamba1_persist.wgsl.
//#include "lib/weight_formats.wgsl"
@group(0) @binding(3) var<storage, read> w_x: array<vec4<u32>>;      // in_proj's x half [I, D/8]
@group(0) @binding(4) var<storage, read> w_z: array<vec4<u32>>;      // in_proj's z half [I, D/8]
@group(0) @binding(5) var<storage, read> w_dt: array<vec4<u32>>;     // x_proj's dt rows [R, I/8]
@group(0) @binding(6) var<storage, read> w_b: array<vec4<u32>>;      // x_proj's B rows [N, I/8]
@group(0) @binding(7) var<storage, read> w_c: array<vec4<u32>>;      // x_proj's C rows [N, I/8]
@group(0) @binding(8) var<storage, read> w_out: array<vec4<u32>>;    // out_proj [D, I/8]

const CV = 2u;
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

fn raw_dot(q: Raw, c: u32) -> f32 {
  return dot(vec4<f32>(f16_pair(q.x), f16_pair(q.y)), xs[2u * c]) +
         dot(vec4<f32>(f16_pair(q.z), f16_pair(q.w)), xs[2u * c + 1u]);
}

fn chunk_scale(m: u32, row: u32, c: u32) -> f32 { return 1.0; }

//#include "lib/mamba1_persist.wgsl"
