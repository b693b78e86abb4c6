// The q4 weight format of the decode mat-vec (lib/matvec_rows.wgsl) and of Mamba-1's folded
// x_proj (lib/matvec_xproj.wgsl): bindings, chunk loads, their values and scales. Included by
// shaders/matvec_q4.wgsl and shaders/matvec_q4_gather.wgsl.
//#include "lib/weight_formats.wgsl"
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;    // W_0: [N, K/32], then N*K/32 f16 scales
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;   // W_1: [N1, K/32], then scales
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;   // W_2: [N2, K/32], then scales

const CV = 8u;
// Whether a scale loads as its own word (wword) rather than as the vec4 that holds it
// (MAMBAWEB_MATVEC_SCALE_WORD, py_engine/ops/weight_format.py).
override SCALE_WORD: bool = false;
alias Raw = vec4<u32>;

fn wvec(g: u32, i: u32) -> vec4<u32> {
  switch g { case 0u: { return w[w0() + i]; } case 1u: { return w1[i]; } default: { return w2[i]; } }
}

fn load_raw(g: u32, row: u32, c: u32) -> Raw { return wvec(g, row * (p.K / 32u) + c); }

fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 {
  return dot(q4_low(q.x), xin(xo, no)) + dot(q4_high(q.x), xin(xo + 1u, no + 1u)) +
         dot(q4_low(q.y), xin(xo + 2u, no + 2u)) + dot(q4_high(q.y), xin(xo + 3u, no + 3u)) +
         dot(q4_low(q.z), xin(xo + 4u, no + 4u)) + dot(q4_high(q.z), xin(xo + 5u, no + 5u)) +
         dot(q4_low(q.w), xin(xo + 6u, no + 6u)) + dot(q4_high(q.w), xin(xo + 7u, no + 7u));
}

// Word i of W_g's buffer, loaded alone: a component of the vec4 in memory, not the whole vec4
// taken apart after (a 16-byte load and four registers held per scale while in flight).
fn wword(g: u32, i: u32) -> u32 {
  switch g {
    case 0u: { return w[w0() + i / 4u][i % 4u]; }
    case 1u: { return w1[i / 4u][i % 4u]; }
    default: { return w2[i / 4u][i % 4u]; }
  }
}

fn chunk_scale(g: u32, row: u32, c: u32) -> f32 {   // the group's f16 scale
  let groups = p.K / 32u;                            // = chunks per row
  let group = row * groups + c;
  let s = rows_of(g) * groups * 4u + group / 2u;     // the scale pair's word index
  if (SCALE_WORD) { return half_of(wword(g, s), (group & 1u) == 1u); }
  return half_of(wvec(g, s / 4u)[s % 4u], (group & 1u) == 1u);
}

// Mamba-1's x_proj folded into the conv block's store (lib/matvec_xproj.wgsl): its three row
// blocks (each its nibbles, then its f16 scales) packed side by side at load, all through
// binding 6 (W_2): dt from its start, B's from chunk XB_OFF, C's from XC_OFF. A chunk is one
// group of 32 values with one scale.
fn piece_raw(b: u32, i: u32) -> Raw {
  switch b { case 0u: { return w2[i]; } case 1u: { return w2[XB_OFF + i]; } default: { return w2[XC_OFF + i]; } }
}

fn raw_vals(q: Raw, v: u32) -> vec4<f32> {
  if ((v & 1u) == 0u) { return q4_low(q[v / 2u]); }
  return q4_high(q[v / 2u]);
}

fn piece_row_scale(b: u32, row: u32) -> f32 { return 1.0; }   // q4's scales are per chunk

// The scale of chunk c of block b's row `row`: after the block's nibbles (p.N / 32 chunks a row).
fn piece_chunk_scale(b: u32, row: u32, c: u32) -> f32 {
  let rs = p.N / 32u;
  let group = row * rs + c;
  let word = xproj_scales_at(b, rs) * 4u + group / 2u;
  return half_of(w2[word / 4u][word % 4u], (group & 1u) == 1u);
}
