enable subgroups;
// Mamba-1's decode step with x_proj AND dt_proj folded in (py_engine/ops/selective_scan.py:
// selective_scan_step_xproj): each workgroup first computes the whole of x_proj for its
// sequence, [dt_low | B | C] = W_x u (R + 2N rows of length I), into workgroup memory, then runs
// the step of lib/selective_scan_step_body.wgsl for its CPW channels on that copy. Every
// workgroup repeats the same x_proj -- the same sums in the same order, so the same bits in
// each -- which costs each of them a read of W_x (from L2 after the first) and saves the layer
// its x_proj dispatch: a trade that pays while W_x is small (step_folds_x_proj says where).
override SUBGROUPS: bool = true;   // the lane reductions' steps below the subgroup size as shuffles
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return subgroupShuffleXor(v, mask); }
const CPW = 16u;   // channels per 256-thread workgroup: half as many repeats of x_proj as 8 would
fn dl_at(b: u32, k: u32) -> f32 { return xd[k]; }
fn b_at(b: u32, n: u32) -> f32 { return xd[p._p0 + n]; }
fn c_at(b: u32, n: u32) -> f32 { return xd[p._p0 + p.N + n]; }
//#include "lib/selective_scan_step_body.wgsl"
//#include "lib/weight_formats.wgsl"

// W_x's three row blocks, one format (lib/weight_formats.wgsl), read in 16-byte chunks of VPC
// values: f32 4, f16 and bf16 8, q8 16, q4 32 (one q4 group, so one scale per chunk).
override FMT: u32 = 1u;   // 0 f32, 1 f16, 2 bf16, 3 q8, 4 q4
@group(0) @binding(14) var<storage, read> wx0: array<vec4<u32>>;  // x_proj#dt [R, I/VPC], then scales (q8, q4)
@group(0) @binding(15) var<storage, read> wx1: array<vec4<u32>>;  // x_proj#B [N, I/VPC], then scales
@group(0) @binding(16) var<storage, read> wx2: array<vec4<u32>>;  // x_proj#C [N, I/VPC], then scales
@group(0) @binding(17) var<storage, read> u4: array<vec4<f32>>;   // binding 1's u as vec4s [Bsz, I/4]

const XL = 16u;                 // lanes per x_proj row: 16 rows at a time in 256 threads
const MAXROWS = 160u;           // R + 2N at most (XPROJ_ROWS in the op)
var<workgroup> part: array<f32, MAXROWS * XL>;   // [row, lane] partial sums, 10 KB
var<workgroup> xd: array<f32, MAXROWS>;          // [dt_low (R) | B (N) | C (N)] of the sequence

fn vpc() -> u32 {
  switch FMT { case 0u: { return 4u; } case 1u, 2u: { return 8u; } case 3u: { return 16u; }
               default: { return 32u; } }
}

fn wx(g: u32, i: u32) -> vec4<u32> {
  switch g { case 0u: { return wx0[i]; } case 1u: { return wx1[i]; } default: { return wx2[i]; } }
}

fn wx_word(g: u32, i: u32) -> u32 { return wx(g, i / 4u)[i % 4u]; }

// chunk q (a row's values k .. k + VPC) . u[k ..], x the u4 index of u[k]
fn chunk_dot(q: vec4<u32>, x: u32) -> f32 {
  switch FMT {
    case 0u: { return dot(bitcast<vec4<f32>>(q), u4[x]); }
    case 1u: {
      return dot(vec4<f32>(f16_pair(q.x), f16_pair(q.y)), u4[x]) +
             dot(vec4<f32>(f16_pair(q.z), f16_pair(q.w)), u4[x + 1u]);
    }
    case 2u: {
      return dot(vec4<f32>(bf16_pair(q.x), bf16_pair(q.y)), u4[x]) +
             dot(vec4<f32>(bf16_pair(q.z), bf16_pair(q.w)), u4[x + 1u]);
    }
    case 3u: {
      return dot(q8_quad(q.x), u4[x]) + dot(q8_quad(q.y), u4[x + 1u]) +
             dot(q8_quad(q.z), u4[x + 2u]) + dot(q8_quad(q.w), u4[x + 3u]);
    }
    default: {
      return dot(q4_low(q.x), u4[x]) + dot(q4_high(q.x), u4[x + 1u]) +
             dot(q4_low(q.y), u4[x + 2u]) + dot(q4_high(q.y), u4[x + 3u]) +
             dot(q4_low(q.z), u4[x + 4u]) + dot(q4_high(q.z), u4[x + 5u]) +
             dot(q4_low(q.w), u4[x + 6u]) + dot(q4_high(q.w), u4[x + 7u]);
    }
  }
}

// q4: chunk c of row `row` (block of `rows` rows, cpr chunks a row) is one group: its f16 scale
fn group_scale(g: u32, rows: u32, row: u32, c: u32, cpr: u32) -> f32 {
  if (FMT != 4u) { return 1.0; }
  let group = row * cpr + c;
  return half_of(wx_word(g, rows * cpr * 4u + group / 2u), (group & 1u) == 1u);
}

// q8: the row's f32 scale, applied once to its whole sum
fn row_scale(g: u32, rows: u32, row: u32) -> f32 {
  if (FMT != 3u) { return 1.0; }
  return bitcast<f32>(wx_word(g, rows * (p.I / 4u) + row));
}

// xd <- W_x u[b]: row r's 16 lanes take chunks lane, lane + 16, ... (neighbouring lanes read
// neighbouring chunks: coalesced), four loads issued before their sums; then one thread a row
// adds its 16 partials in lane order. Called by all 256 threads (it holds two barriers).
fn x_proj(lid: u32, b: u32) {
  let R = p._p0;
  let rows = R + 2u * p.N;
  let cpr = p.I / vpc();
  let step = vpc() / 4u;                          // u4 entries a chunk
  let ub = (p.u_off + b * p.u_str) / 4u;          // u4 index of u[b, 0]
  let lane = lid % XL;
  for (var r = lid / XL; r < rows; r += 256u / XL) {
    var g = 0u;
    var rr = r;
    var nr = R;
    if (r >= R + p.N) { g = 2u; rr = r - R - p.N; nr = p.N; }
    else if (r >= R) { g = 1u; rr = r - R; nr = p.N; }
    let base = rr * cpr;
    var acc = 0.0;
    var c = lane;
    for (; c + 3u * XL < cpr; c += 4u * XL) {
      let q0 = wx(g, base + c);
      let q1 = wx(g, base + c + XL);
      let q2 = wx(g, base + c + 2u * XL);
      let q3 = wx(g, base + c + 3u * XL);
      acc += chunk_dot(q0, ub + c * step) * group_scale(g, nr, rr, c, cpr);
      acc += chunk_dot(q1, ub + (c + XL) * step) * group_scale(g, nr, rr, c + XL, cpr);
      acc += chunk_dot(q2, ub + (c + 2u * XL) * step) * group_scale(g, nr, rr, c + 2u * XL, cpr);
      acc += chunk_dot(q3, ub + (c + 3u * XL) * step) * group_scale(g, nr, rr, c + 3u * XL, cpr);
    }
    for (; c < cpr; c += XL) {
      acc += chunk_dot(wx(g, base + c), ub + c * step) * group_scale(g, nr, rr, c, cpr);
    }
    part[r * XL + lane] = acc;
    if (lane == 0u) { xd[r] = row_scale(g, nr, rr); }
  }
  workgroupBarrier();
  for (var r = lid; r < rows; r += 256u) {
    var s = 0.0;
    for (var l = 0u; l < XL; l++) { s += part[r * XL + l]; }
    xd[r] *= s;
  }
  workgroupBarrier();
}

@compute @workgroup_size(256)
fn selective_scan_step_xproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                             @builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(subgroup_size) sg: u32) {
  x_proj(lid3.x, wid.y);
  scan_step_dtproj(lid3.x, wid, select(0u, sg, SUBGROUPS));
}
