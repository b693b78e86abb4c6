// The six weight matrices of lib/mamba1_persist.wgsl's layer, in any format, as 16-byte chunks
// (f32: four values; f16: eight; q8: sixteen, then one f32 scale a row; q4: thirty-two, then
// one f16 scale a group of 32; lib/weight_formats.wgsl), and their words one at a time (a
// scale: not the 16 bytes holding it). Included by each mamba1_persist_<format>.wgsl.
@group(0) @binding(3) var<storage, read> w_x: array<vec4<u32>>;      // in_proj's x half [I, D]
@group(0) @binding(4) var<storage, read> w_z: array<vec4<u32>>;      // in_proj's z half [I, D]
@group(0) @binding(5) var<storage, read> w_dt: array<vec4<u32>>;     // x_proj's dt rows [R, I]
@group(0) @binding(6) var<storage, read> w_b: array<vec4<u32>>;      // x_proj's B rows [N, I]
@group(0) @binding(7) var<storage, read> w_c: array<vec4<u32>>;      // x_proj's C rows [N, I]
@group(0) @binding(8) var<storage, read> w_out: array<vec4<u32>>;    // out_proj [D, I]

alias Raw = vec4<u32>;

// Chunks i.x .. i.w of matrix m (0 in_proj's x half, 1 its z half, 2..4 x_proj's dt, B, C
// rows, 5 out_proj), the four loads in one branch (issued together: a branch a
// load would let a compiler keep each behind the one before).
struct Quad { a: Raw, b: Raw, c: Raw, d: Raw };

fn load_quad(m: u32, i: vec4<u32>) -> Quad {
  var q: Quad;
  switch m {
    case 0u: { q = Quad(w_x[i.x], w_x[i.y], w_x[i.z], w_x[i.w]); }
    case 1u: { q = Quad(w_z[i.x], w_z[i.y], w_z[i.z], w_z[i.w]); }
    case 2u: { q = Quad(w_dt[i.x], w_dt[i.y], w_dt[i.z], w_dt[i.w]); }
    case 3u: { q = Quad(w_b[i.x], w_b[i.y], w_b[i.z], w_b[i.w]); }
    case 4u: { q = Quad(w_c[i.x], w_c[i.y], w_c[i.z], w_c[i.w]); }
    default: { q = Quad(w_out[i.x], w_out[i.y], w_out[i.z], w_out[i.w]); }
  }
  return q;
}

// Word i of matrix m's buffer, loaded alone (a format's scales).
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
