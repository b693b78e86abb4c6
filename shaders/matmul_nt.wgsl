// The forward product of a Linear on real GPUs (prefill, training's forward): 75% of a
// mamba-1.4b prefill's GPU time went to it.
//
//   C[i, j] (+)= sum_k A[i, k] * W[j, k]  (+ bias[j])       A [M, K], W [N, K], C [M, N]
//
// Both operands are contiguous along k, so slices load as 16-byte vec4s along k -- where
// matmul_tiled.wgsl (any strides) loads one f32 at a time with its own index arithmetic --
// and are transposed in registers into the k-major workgroup layout its product loop reads.
// Same Params, bindings and split-K contract as matmul_tiled.wgsl (py_engine/ops/linear.py
// picks this one when K and both row strides are multiples of 4 and bindings 16-aligned).
//
// A workgroup of 16x16 threads computes a 128 x 128 block of C, each thread 8 x 8 of it (rows
// {0, 64} + ty*4 + 0..3, columns {0, 64} + tx*4 + 0..3), walking K in slices of BK (16 or 32,
// a pipeline constant). A slice of each operand is 32 row groups x BK/4 k groups of 4 x 4
// blocks; each block is one thread's 4 vec4 loads (4 rows, 4 consecutive k) and 4 whole-vec4
// stores (4 rows at one k: one cell). With BK 16 threads 0..127 stage A and 128..255 W; with
// BK 32 every thread stages a block of each. Loads for slice k0 + BK are issued before the
// products of slice k0 (they arrive while it runs) and stored after them.
// Zero-filled past M, N and K (K % 4 == 0: a vec4 along k is inside K or past it whole).

struct Params {
  M: u32, N: u32, K: u32, flags: u32,      // flags: bit0 add bias, bit1 accumulate into C,
  sa0: u32, sa1: u32, sb0: u32, sb1: u32,  //        bit4 split-K partials (matmul_tiled.wgsl)
  ks: u32, _p0: u32, _p1: u32, _p2: u32,   // k per slice: workgroup z sums k in [z ks, (z+1) ks)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;    // A [M, K], row stride sa0 floats
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;    // W [N, K], row stride sb1 floats
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [N]
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // C [M, N]; split: [S, M, N]

const SPLIT: u32 = 16u;
override BK: u32 = 16u;                    // k per slice: 16 (16 KiB staged) or 32 (32 KiB)
// Staged slices (NBUF 2: two, the next one stored while the current one is summed, one barrier
// per slice instead of two; BK 16 only: 32 KiB), k-major: cell kk * 32 + g of a slice holds rows
// 4g .. 4g+3 of the block at k0 + kk (no padding: the product loop's reads are broadcasts or
// consecutive cells, and a warp's staging stores (32 row groups at one k) are consecutive cells).
override NBUF: u32 = 1u;
var<workgroup> As: array<vec4<f32>, BK * 32u * NBUF>;
var<workgroup> Bs: array<vec4<f32>, BK * 32u * NBUF>;

// One 4 x 4 block: rows (or W rows) 4g .. 4g+3, k0 + 4q .. +3, as loaded (vec4 per row).
struct Block { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> };

fn load_row(wm: bool, row: u32, k: u32, kend: u32) -> vec4<f32> {
  if (wm) {
    if (row < p.N && k < kend) { return b[(row * p.sb1 + k) / 4u]; }
  } else {
    if (row < p.M && k < kend) { return a[(row * p.sa0 + k) / 4u]; }
  }
  return vec4<f32>(0.0);
}

// Unit u < 16 BK of a slice (8 BK per operand: 32 row groups x BK/4 k groups): operand W when
// u >= 8 BK; v = its unit within the operand: row group v % 32, k group v / 32.
fn load_block(u: u32, i0: u32, j0: u32, k0: u32, kend: u32) -> Block {
  let wm = u >= 8u * BK;
  let v = u % (8u * BK);
  let g = v % 32u;
  let k = k0 + 4u * (v / 32u);
  var r0 = i0 + 4u * g;
  if (wm) { r0 = j0 + 4u * g; }
  return Block(load_row(wm, r0, k, kend), load_row(wm, r0 + 1u, k, kend),
               load_row(wm, r0 + 2u, k, kend), load_row(wm, r0 + 3u, k, kend));
}

// The block's four k as four cells (4 rows each), into As or Bs (slice buffer buf).
fn store_block(u: u32, t: Block, buf: u32) {
  let v = u % (8u * BK);
  let cell = buf * BK * 32u + 4u * (v / 32u) * 32u + v % 32u;
  let c0 = vec4<f32>(t.r0.x, t.r1.x, t.r2.x, t.r3.x);
  let c1 = vec4<f32>(t.r0.y, t.r1.y, t.r2.y, t.r3.y);
  let c2 = vec4<f32>(t.r0.z, t.r1.z, t.r2.z, t.r3.z);
  let c3 = vec4<f32>(t.r0.w, t.r1.w, t.r2.w, t.r3.w);
  if (u >= 8u * BK) {
    Bs[cell] = c0; Bs[cell + 32u] = c1; Bs[cell + 64u] = c2; Bs[cell + 96u] = c3;
  } else {
    As[cell] = c0; As[cell + 32u] = c1; As[cell + 64u] = c2; As[cell + 96u] = c3;
  }
}

// C[i, j .. j+3] (+ bias, + old C) for the columns inside N; nothing for a row past M.
// Split-K: the raw partial of slice z instead, at c[z, i, j].
fn store4(z: u32, i: u32, j: u32, v: vec4<f32>) {
  if (i >= p.M) { return; }
  for (var s = 0u; s < 4u; s++) {
    let jj = j + s;
    if (jj >= p.N) { return; }
    var x = v[s];
    let idx = i * p.N + jj;
    if ((p.flags & SPLIT) != 0u) { c[z * p.M * p.N + idx] = x; continue; }
    if ((p.flags & 1u) != 0u) { x += bias[jj]; }
    if ((p.flags & 2u) != 0u) { x += c[idx]; }
    c[idx] = x;
  }
}

@compute @workgroup_size(16, 16)
fn matmul_nt_128(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_id) l3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let i0 = wid.y * 128u;
  let j0 = wid.x * 128u;
  let tx = l3.x;
  let ty = l3.y;
  var r0a = vec4<f32>(0.0); var r0b = vec4<f32>(0.0);
  var r1a = vec4<f32>(0.0); var r1b = vec4<f32>(0.0);
  var r2a = vec4<f32>(0.0); var r2b = vec4<f32>(0.0);
  var r3a = vec4<f32>(0.0); var r3b = vec4<f32>(0.0);
  var r4a = vec4<f32>(0.0); var r4b = vec4<f32>(0.0);
  var r5a = vec4<f32>(0.0); var r5b = vec4<f32>(0.0);
  var r6a = vec4<f32>(0.0); var r6b = vec4<f32>(0.0);
  var r7a = vec4<f32>(0.0); var r7b = vec4<f32>(0.0);
  let k0s = wid.z * p.ks;
  let kend = min(p.K, k0s + p.ks);
  let two = BK == 32u;                   // a block of each operand per thread
  let u1 = lid + 256u;                   // the second block's unit (BK 32: W)
  var nxt = load_block(lid, i0, j0, k0s, kend);
  var nxt1: Block;
  if (two) { nxt1 = load_block(u1, i0, j0, k0s, kend); }
  store_block(lid, nxt, 0u);
  if (two) { store_block(u1, nxt1, 0u); }
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = k0s; k0 < kend; k0 += BK) {
    let more = k0 + BK < kend;
    if (more) {
      nxt = load_block(lid, i0, j0, k0 + BK, kend);
      if (two) { nxt1 = load_block(u1, i0, j0, k0 + BK, kend); }
    }
    let base = buf * BK * 32u;
    for (var kk = 0u; kk < BK; kk++) {
      let a0 = As[base + kk * 32u + ty];
      let a1 = As[base + kk * 32u + 16u + ty];
      let b0 = Bs[base + kk * 32u + tx];
      let b1 = Bs[base + kk * 32u + 16u + tx];
      r0a += a0.x * b0; r0b += a0.x * b1;
      r1a += a0.y * b0; r1b += a0.y * b1;
      r2a += a0.z * b0; r2b += a0.z * b1;
      r3a += a0.w * b0; r3b += a0.w * b1;
      r4a += a1.x * b0; r4b += a1.x * b1;
      r5a += a1.y * b0; r5b += a1.y * b1;
      r6a += a1.z * b0; r6b += a1.z * b1;
      r7a += a1.w * b0; r7b += a1.w * b1;
    }
    // one buffer: every thread is done reading it before it is overwritten; two: the other
    // buffer was last read before the previous slice's barrier
    if (NBUF == 1u) { workgroupBarrier(); }
    if (more) {
      buf = (buf + 1u) % NBUF;
      store_block(lid, nxt, buf);
      if (two) { store_block(u1, nxt1, buf); }
    }
    workgroupBarrier();
  }
  store4(wid.z, i0 + ty * 4u + 0u, j0 + tx * 4u, r0a);
  store4(wid.z, i0 + ty * 4u + 0u, j0 + 64u + tx * 4u, r0b);
  store4(wid.z, i0 + ty * 4u + 1u, j0 + tx * 4u, r1a);
  store4(wid.z, i0 + ty * 4u + 1u, j0 + 64u + tx * 4u, r1b);
  store4(wid.z, i0 + ty * 4u + 2u, j0 + tx * 4u, r2a);
  store4(wid.z, i0 + ty * 4u + 2u, j0 + 64u + tx * 4u, r2b);
  store4(wid.z, i0 + ty * 4u + 3u, j0 + tx * 4u, r3a);
  store4(wid.z, i0 + ty * 4u + 3u, j0 + 64u + tx * 4u, r3b);
  store4(wid.z, i0 + 64u + ty * 4u + 0u, j0 + tx * 4u, r4a);
  store4(wid.z, i0 + 64u + ty * 4u + 0u, j0 + 64u + tx * 4u, r4b);
  store4(wid.z, i0 + 64u + ty * 4u + 1u, j0 + tx * 4u, r5a);
  store4(wid.z, i0 + 64u + ty * 4u + 1u, j0 + 64u + tx * 4u, r5b);
  store4(wid.z, i0 + 64u + ty * 4u + 2u, j0 + tx * 4u, r6a);
  store4(wid.z, i0 + 64u + ty * 4u + 2u, j0 + 64u + tx * 4u, r6b);
  store4(wid.z, i0 + 64u + ty * 4u + 3u, j0 + tx * 4u, r7a);
  store4(wid.z, i0 + 64u + ty * 4u + 3u, j0 + 64u + tx * 4u, r7b);
}
