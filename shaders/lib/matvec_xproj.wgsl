// Mamba-1 decode: in_proj + conv step (matvec_forward_conv) with x_proj's partial sums folded
// into the store -- the x_proj dispatch goes, one of four per layer (py_engine/ops/linear.py,
// in_proj_conv_xproj_step). x_proj [O = R + 2 XN, I] maps the conv's output u [M, I] to
// (dt_low [R], B [XN], C [XN]); the workgroup that computes channels j0 .. j0 + CB of u
// (CB = THREADS / TPR * RPT, contiguous) adds their share of every output:
//   part[m, wg, o] = sum_{j < CB} x_proj[o, j0 + j] * u[m, j0 + j]       wg = j0 / CB
// (rows of the shares O4 = O rounded up to a multiple of 4 long: the scan reads them as vec4s)
// and the scan step sums the P = ceil(I / CB) shares itself (lib/selective_scan_step_body.wgsl,
// XPROJ) -- a workgroup cannot see another's results inside one dispatch, so the sum has to
// wait for the next one, which the scan is. x_proj's three row blocks (three pieces of the
// loader's) lie side by side in one buffer, packed at load (nn/mamba1.decode_packs), and come
// through one binding: 6 (W_2, unused with G = 2; dt's rows p.N2 = R), B's rows from chunk
// XB_OFF, C's from XC_OFF (the same for every layer of a model), all in the format of in_proj
// (f32, f16 or bf16: whole 16-byte chunks of 4 CV values, CB a multiple of 4 CV; the host
// checks). B and C had bindings of their own until the thirty-fourth session: 12 storage
// bindings with the conv entry's 10, over the 10 a Mac's Chrome gives; now 10.
// The including format file defines, before this include:
//   fn piece_raw(b: u32, i: u32) -> Raw     chunk i of x_proj block b (0 dt, 1 B, 2 C)
//   fn raw_vals(q: Raw, v: u32) -> vec4<f32>   values 4v .. 4v + 3 of a chunk (v < CV), unscaled
//   fn piece_row_scale(b: u32, row: u32) -> f32   the scale of block b's row (q8; else 1)
//   fn piece_chunk_scale(b: u32, row: u32, c: u32) -> f32   of its chunk c (q4; else 1)
// Bindings: y2 (8) [M, P, O4] the shares, written here (after the gathered totals with XP_F:
// lib/matvec_xproj_gather.wgsl); the rest as matvec_forward_conv.
override XN: u32 = 16u;                  // B's and C's rows (the SSM state size)
override XB_OFF: u32 = 0u;               // B's first chunk in binding 6
override XC_OFF: u32 = 0u;               // C's first chunk in binding 6
var<workgroup> ush: array<vec4<f32>, 16>;   // u of the block: [MR, CB / 4] (MR * CB <= 64)

fn xproj_row_chunk(o: u32, c: u32) -> Raw {
  let rs = p.N / (4u * CV);              // chunks per x_proj row (I inputs)
  let R = p.N2;
  if (o < R) { return piece_raw(0u, o * rs + c); }
  if (o < R + XN) { return piece_raw(1u, (o - R) * rs + c); }
  return piece_raw(2u, (o - R - XN) * rs + c);
}

// x_proj row o's scale (q8: its row's; 1 for the float formats).
fn xproj_row_scale(o: u32) -> f32 {
  let R = p.N2;
  if (o < R) { return piece_row_scale(0u, o); }
  if (o < R + XN) { return piece_row_scale(1u, o - R); }
  return piece_row_scale(2u, o - R - XN);
}

// Where block b's scales start in binding 6, in chunks: after its rows of row_chunks chunks
// each (q8, q4: the row blocks are each their rows, then their scales).
fn xproj_scales_at(b: u32, row_chunks: u32) -> u32 {
  if (b == 1u) { return XB_OFF + XN * row_chunks; }
  if (b == 2u) { return XC_OFF + XN * row_chunks; }
  return p.N2 * row_chunks;
}

// Chunk c's scale of x_proj row o (q4: its group's; 1 for the other formats).
fn xproj_chunk_scale(o: u32, c: u32) -> f32 {
  let R = p.N2;
  if (o < R) { return piece_chunk_scale(0u, o, c); }
  if (o < R + XN) { return piece_chunk_scale(1u, o - R, c); }
  return piece_chunk_scale(2u, o - R - XN, c);
}

@compute @workgroup_size(THREADS)
fn matvec_forward_conv_xproj(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32,
                             @builtin(subgroup_size) sg: u32) {
  if (!has_rows(wid, nwg)) { return; }  // uniform per workgroup
  conv_xproj_shares(wid, nwg, lid, sg);
}

// Where the shares start in y2: 0, or past the gathered totals (XP_F > 0,
// lib/matvec_xproj_gather.wgsl: totals [MR, PG, O4], then the shares).
override XP_F: u32 = 0u;                 // shares a gathered group (0: not gathered)
fn xp_shares_at(P: u32, O4: u32) -> u32 {
  if (XP_F == 0u) { return 0u; }
  let F = max(XP_F, 1u);                 // (Tint refuses a division by the constant 0, even dead)
  return MR * ((P + F - 1u) / F) * O4;
}

// The conv block's x_proj shares: this workgroup's index among the P blocks of CB channels, and
// the O outputs, rows O4 long (O rounded up to a multiple of 4).
struct XpShape { wg: u32, P: u32, O: u32, O4: u32 }
fn xp_shape(wid: vec3<u32>, nwg: vec3<u32>) -> XpShape {
  let CB = THREADS / TPR * RPT;          // the block's channels
  let O = p.N2 + 2u * XN;
  return XpShape(first_row(wid, nwg) / CB, (p.N + CB - 1u) / CB, O, (O + 3u) / 4u * 4u);
}

// x_proj's chunks of a thread's first output (o = lid) loaded at the kernel's start, beside
// the store's addends (PREFETCH 3), rather than after in_proj's rows are summed and the conv
// stored: the share's loads then ride with the weight stream instead of adding a memory wait
// to the dispatch's tail (py_engine/ops/weight_format.xproj_early). The same chunks, summed in
// the same order: the same bits. Up to XP_EARLY_CHUNKS chunks of a row a block (16 channels in
// f32, 32 in f16/bf16, 64 in q8/q4); a larger block, or a thread's second output (O > THREADS),
// loads as before.
override XP_EARLY: bool = false;
const XP_EARLY_CHUNKS = 4u;

// Chunks of each x_proj row over a block's CB = THREADS / TPR * RPT channels.
fn xp_chunks() -> u32 { return (THREADS / TPR * RPT) / (4u * CV); }

// The block's chunk c of an x_proj row (c0: the block's first), clamped to the row's last (a
// ragged last block loads a chunk it never sums).
fn xp_chunk_at(c0: u32, c: u32) -> u32 { return min(c0 + c, p.N / (4u * CV) - 1u); }

fn xp_early() -> bool { return XP_EARLY && xp_chunks() <= XP_EARLY_CHUNKS; }

// The block's chunks of x_proj row lid (zero where none is loaded).
fn xp_early_load(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> array<Raw, 4> {   // 4: XP_EARLY_CHUNKS
  var q: array<Raw, 4>;
  if (!xp_early() || wid.z != CONV_G || lid >= xp_shape(wid, nwg).O) { return q; }
  let c0 = first_row(wid, nwg) / (4u * CV);
  for (var c = 0u; c < XP_EARLY_CHUNKS; c++) {     // a constant count: the loads issued together
    if (c < xp_chunks()) { q[c] = xproj_row_chunk(lid, xp_chunk_at(c0, c)); }
  }
  return q;
}

// A workgroup's rows, stored; a conv block's workgroup (wid.z == CONV_G) also its share of
// every x_proj output, at y2[xp_shares_at + (m * P + wg) * O4 + o].
fn conv_xproj_shares(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sg: u32) {
  let early = xp_early_load(wid, nwg, lid);
  let cs = conv_sums(wid, nwg, lid, sg);
  let rs = cs.rs;
  let e = cs.e;
  let taps = cs.taps;
  // the z block stores as matvec_forward does (wid.z, not rs.g: the barrier below needs a test
  // WGSL's uniformity analysis sees as uniform, and rs also holds the thread's row and lane)
  if (wid.z != CONV_G) { store_rows(rs, e); return; }
  let T = THREADS / TPR;
  let CB = T * RPT;                      // the block's channels
  if (rs.lane == 0u) {                   // the conv (DCONV = 4: the host checks) and u kept
    var xv = rs.tot;
    if ((p.flags & 1u) != 0u) { xv += e.b; }
    let u = vec4<f32>(conv4_store(rs, 0u, taps.c0, xv.x), conv4_store(rs, 1u, taps.c1, xv.y),
                      conv4_store(rs, 2u, taps.c2, xv.z), conv4_store(rs, 3u, taps.c3, xv.w));
    let jl = lid / TPR;                  // the slot's first channel in the block
    for (var k = 0u; k < RPT * MR; k++) {
      let idx = (k % MR) * CB + jl + (k / MR) * T;      // [m, channel in the block]
      ush[idx / 4u][idx % 4u] = u[k];
    }
  }
  workgroupBarrier();
  let xs = xp_shape(wid, nwg);
  let wg = xs.wg;
  let P = xs.P;
  let O = xs.O;
  let O4 = xs.O4;
  let c0 = first_row(wid, nwg) / (4u * CV);
  for (var o = lid; o < O; o += THREADS) {
    for (var m = 0u; m < MR; m++) {
      var acc = 0.0;
      for (var c = 0u; c < xp_chunks(); c++) {
        let cc = xp_chunk_at(c0, c);
        var q: Raw;
        if (xp_early() && o == lid) { q = early[c]; } else { q = xproj_row_chunk(o, cc); }
        let s = xproj_chunk_scale(o, cc);   // 1 but for q4: each term times it, the same bits
        for (var v = 0u; v < CV; v++) {
          let ui = (m * CB) / 4u + c * CV + v;
          if (c0 + c < p.N / (4u * CV)) { acc += dot(raw_vals(q, v), ush[ui]) * s; }
        }
      }
      y2_set(xp_shares_at(P, O4) + (m * P + wg) * O4 + o, acc * xproj_row_scale(o));
    }
  }
}
