// The 16-bit weight formats of the decode mat-vec (lib/matvec_rows.wgsl) and of Mamba-1's
// folded x_proj (lib/matvec_xproj.wgsl), two values per u32: bindings, chunk loads and their
// values. The including format file defines `fn pair(word: u32) -> vec2<f32>` (its two
// values): lib/matvec_f16_format.wgsl, lib/matvec_bf16_format.wgsl.
//#include "lib/weight_formats.wgsl"
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // W_0 [N, K/8] (8 16-bit values per vec4)
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;   // W_1 [N1, K/8]
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;   // W_2 [N2, K/8]

const CV = 2u;
alias Raw = vec4<u32>;

fn load_raw(g: u32, row: u32, c: u32) -> Raw {
  let i = row * (p.K / 8u) + c;
  switch g { case 0u: { return w[w0() + i]; } case 1u: { return w1[i]; } default: { return w2[i]; } }
}

fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 {
  return dot(vec4<f32>(pair(q.x), pair(q.y)), xin(xo, no)) +
         dot(vec4<f32>(pair(q.z), pair(q.w)), xin(xo + 1u, no + 1u));
}

fn chunk_scale(g: u32, row: u32, c: u32) -> f32 { return 1.0; }

// Mamba-1's x_proj folded into the conv block's store (lib/matvec_xproj.wgsl): its three row
// blocks packed side by side at load, all through binding 6 (W_2): dt from its start, B's rows
// from chunk XB_OFF, C's from XC_OFF.
fn piece_raw(b: u32, i: u32) -> Raw {
  switch b { case 0u: { return w2[i]; } case 1u: { return w2[XB_OFF + i]; } default: { return w2[XC_OFF + i]; } }
}

fn raw_vals(q: Raw, v: u32) -> vec4<f32> {
  if (v == 0u) { return vec4<f32>(pair(q.x), pair(q.y)); }
  return vec4<f32>(pair(q.z), pair(q.w));
}

fn piece_row_scale(b: u32, row: u32) -> f32 { return 1.0; }   // unscaled rows
fn piece_chunk_scale(b: u32, row: u32, c: u32) -> f32 { return 1.0; }   // no chunk scales
