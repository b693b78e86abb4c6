// The six weight matrices of lib/mamba1_persist.wgsl's layer, in any format, as 16-byte chunks
// (f32: four values; f16: eight; q8: sixteen, then one f32 scale a row; q4: thirty-two, then
// one f16 scale a group of 32; lib/weight_formats.wgsl), the scales as words one at a time (a
// scale: not the 16 bytes holding it). Included by each mamba1_persist_<format>.wgsl.
@group(0) @binding(3) var<storage, read> w_x: array<vec4<u32>>;      // in_proj's x half [I, D]
@group(0) @binding(4) var<storage, read> w_z: array<vec4<u32>>;      // in_proj's z half [I, D]
@group(0) @binding(5) var<storage, read> w_dt: array<vec4<u32>>;     // x_proj's dt rows [R, I]
@group(0) @binding(6) var<storage, read> w_b: array<vec4<u32>>;      // x_proj's B rows [N, I]
@group(0) @binding(7) var<storage, read> w_c: array<vec4<u32>>;      // x_proj's C rows [N, I]
@group(0) @binding(8) var<storage, read> w_out: array<vec4<u32>>;    // out_proj [D, I]

alias Raw = vec4<u32>;

// Chunks i.x .. i.w of matrix m (0 in_proj's x half, 1 its z half, 2..4 x_proj's dt, B, C
// rows, 5 out_proj) and, for a scaled format (SCALED, the including file's), the words si.x ..
// si.w of the same buffer (the chunks' scales): all eight loads in one branch, issued together
// (a branch a load would let a compiler keep each behind the one before).
struct Quad { a: Raw, b: Raw, c: Raw, d: Raw, s: vec4<u32> };

fn load_quad(m: u32, i: vec4<u32>, si: vec4<u32>) -> Quad {
  var q: Quad;
  let w = si / 4u;
  let k = si % 4u;
  switch m {
    case 0u: {
      q = Quad(w_x[i.x], w_x[i.y], w_x[i.z], w_x[i.w], vec4<u32>());
      if (SCALED) { q.s = vec4<u32>(w_x[w.x][k.x], w_x[w.y][k.y], w_x[w.z][k.z], w_x[w.w][k.w]); }
    }
    case 1u: {
      q = Quad(w_z[i.x], w_z[i.y], w_z[i.z], w_z[i.w], vec4<u32>());
      if (SCALED) { q.s = vec4<u32>(w_z[w.x][k.x], w_z[w.y][k.y], w_z[w.z][k.z], w_z[w.w][k.w]); }
    }
    case 2u: {
      q = Quad(w_dt[i.x], w_dt[i.y], w_dt[i.z], w_dt[i.w], vec4<u32>());
      if (SCALED) {
        q.s = vec4<u32>(w_dt[w.x][k.x], w_dt[w.y][k.y], w_dt[w.z][k.z], w_dt[w.w][k.w]);
      }
    }
    case 3u: {
      q = Quad(w_b[i.x], w_b[i.y], w_b[i.z], w_b[i.w], vec4<u32>());
      if (SCALED) { q.s = vec4<u32>(w_b[w.x][k.x], w_b[w.y][k.y], w_b[w.z][k.z], w_b[w.w][k.w]); }
    }
    case 4u: {
      q = Quad(w_c[i.x], w_c[i.y], w_c[i.z], w_c[i.w], vec4<u32>());
      if (SCALED) { q.s = vec4<u32>(w_c[w.x][k.x], w_c[w.y][k.y], w_c[w.z][k.z], w_c[w.w][k.w]); }
    }
    default: {
      q = Quad(w_out[i.x], w_out[i.y], w_out[i.z], w_out[i.w], vec4<u32>());
      if (SCALED) {
        q.s = vec4<u32>(w_out[w.x][k.x], w_out[w.y][k.y], w_out[w.z][k.z], w_out[w.w][k.w]);
      }
    }
  }
  return q;
}
