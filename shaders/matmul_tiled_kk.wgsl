// The tiled GEMM of x @ W^T with 16-byte staging loads: the forward products of prefill and
// training, whose two operands are both contiguous along k:
//
//   C[i, j] (+)= sum_k A[i*sa0 + k] * W[j*sb1 + k]  (+ bias[j])      C is [M, N]
//
// (A = x [M, K], B = W^T with W [N, K]: sa1 = sb0 = 1). py_engine/ops/linear.py takes it for
// 128 x 128 tiles when K is a positive multiple of 16 (whole steps: every slice, split-K's and
// the K windows' too, is whole steps, so no load needs a test against K) and both rows are K
// long (a row's vec4s never straddle rows; WebGPU binds at 256-byte offsets); every other
// product keeps shaders/matmul_tiled.wgsl. Same Params, split-K partials (its
// matmul_split_reduce sums them) and store, and the same sums in the same order -- each thread
// adds k = 0, 1, 2, ... into its 8 x 8 block of C -- so C is bit for bit that kernel's.
//
// What differs is how a K slice reaches workgroup memory. The scalar kernel walks K in steps of
// 8, each thread loading one 4-row cell of A and of B at one k: 8 four-byte loads. Here K goes
// in steps of 16 (half the barriers); threads 0..127 load A's 128 x 16 slice and threads
// 128..255 W's, each a 4 x 4 block (four rows, one vec4 of k each: four 16-byte loads, the four
// threads of a row block reading 64 contiguous bytes of each row) transposed in registers into
// the k-major cells the products read. On an H200 (`python -m tools.gemm_explore`, engine_kk
// against engine, one call): 1,157 against 1,239 us at 1024 x 8192 x 2048 (mamba-1.4b's
// in_proj at 1,024 tokens), 655 against 750 at 1024 x 2048 x 4096 (out_proj).

//#include "lib/matmul_tiled_params.wgsl"
//#include "lib/matmul_tiled_acc.wgsl"

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;   // A [M, K], rows sa0 apart
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;   // W [N, K], rows sb1 apart
//#include "lib/matmul_tiled_put.wgsl"

// The staged slice, k-major: cell kk * S4 + q holds rows 4q .. 4q + 3 (of A: As, of the 128
// columns' W rows: Bs) at k0 + kk, as one vec4, so a thread reads its 4 rows (or columns) of
// one k in one load. S4 = 33: one cell of padding a row spreads the transposed stores over the
// banks (2 x 8.25 KiB, past WebGPU's default 16 KiB of workgroup memory: py_engine/ops/linear.py
// takes this kernel only where the device offers it). On an H200, 1024 x 8192 x 2048: 1,157
// against 1,218 us unpadded, 1024 x 2048 x 4096: 655 against 666 (tools/gemm_explore). A
// constant, not a pipeline override as it was: Tint's robustness drops a load's clamp only
// against an array of constant length, and with override-sized arrays every staged load was
// clamped -- through Dawn on the H200 this kernel then took 1,263 us at mamba-1.4b's in_proj,
// slower than the scalar-staged one's 1,148 (`mambaweb bench --dawn --only prefill_gemm`).
const S4 = 33u;
var<workgroup> As: array<vec4<f32>, 528>;   // [16][S4]
var<workgroup> Bs: array<vec4<f32>, 528>;

// A thread's 4 x 4 block: v<r> is row r's vec4 of k.
struct Block { v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32> };

// The vec4 index at k = 0 of each of thread lid's four rows (lid < 128: A's rows i0 + 4 rb ..,
// else W's rows j0 + 4 rb ..), plus its vec4 column kb: fixed for the whole K walk. Rows past
// M / N read the last row (the products they feed are never stored).
fn row_bases(lid: u32, i0: u32, j0: u32) -> vec4<u32> {
  let blk = lid % 128u;
  let ofA = lid < 128u;
  let r0 = select(j0, i0, ofA) + (blk / 4u) * 4u;
  let last = select(p.N, p.M, ofA) - 1u;
  let rows = min(vec4<u32>(r0, r0 + 1u, r0 + 2u, r0 + 3u), vec4<u32>(last));
  return rows * (select(p.sb1, p.sa0, ofA) / 4u) + vec4<u32>(blk % 4u);
}

// Thread lid's block of the slice at k0 (whole steps: always inside K).
fn load_block(lid: u32, h: vec4<u32>, k0: u32) -> Block {
  var s: Block;
  let k4 = k0 / 4u;
  if (lid < 128u) {
    s.v0 = a4[h.x + k4]; s.v1 = a4[h.y + k4]; s.v2 = a4[h.z + k4]; s.v3 = a4[h.w + k4];
  } else {
    s.v0 = w4[h.x + k4]; s.v1 = w4[h.y + k4]; s.v2 = w4[h.z + k4]; s.v3 = w4[h.w + k4];
  }
  return s;
}

// The block transposed into its cells: k kb*4 + t of the four rows, as one vec4 per k.
fn store_block(s: Block, lid: u32) {
  let blk = lid % 128u;
  let at = (blk % 4u) * 4u * S4 + blk / 4u;
  let t0 = vec4<f32>(s.v0.x, s.v1.x, s.v2.x, s.v3.x);
  let t1 = vec4<f32>(s.v0.y, s.v1.y, s.v2.y, s.v3.y);
  let t2 = vec4<f32>(s.v0.z, s.v1.z, s.v2.z, s.v3.z);
  let t3 = vec4<f32>(s.v0.w, s.v1.w, s.v2.w, s.v3.w);
  if (lid < 128u) {
    As[at] = t0; As[at + S4] = t1; As[at + 2u * S4] = t2; As[at + 3u * S4] = t3;
  } else {
    Bs[at] = t0; Bs[at + S4] = t1; Bs[at + 2u * S4] = t2; Bs[at + 3u * S4] = t3;
  }
}

// 128 x 128 block per workgroup; thread (tx, ty) owns rows {0, 64} + ty*4 + 0..3 and columns
// {0, 64} + tx*4 + 0..3 of it (Acc8), as matmul_tiled_128.
@compute @workgroup_size(16, 16)
fn matmul_tiled_128_kk(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_id) l3: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let i0 = wid.y * 128u;
  let j0 = wid.x * 128u;
  let tx = l3.x;
  let ty = l3.y;
  var c: Acc8;                           // zero-initialised
  let kr = k_range(wid.z);
  let h = row_bases(lid, i0, j0);
  var next = load_block(lid, h, kr.x);
  for (var k0 = kr.x; k0 < kr.y; k0 += 16u) {
    store_block(next, lid);
    workgroupBarrier();
    // the next slice's loads are issued here and arrive while this slice's products run
    if (k0 + 16u < kr.y) { next = load_block(lid, h, k0 + 16u); }
    // k = 0 .. 15 of the slice, written out (lib/matmul_tiled_acc.wgsl says why)
    c = mac8(c, As[0u * S4 + ty], As[0u * S4 + 16u + ty], Bs[0u * S4 + tx],
             Bs[0u * S4 + 16u + tx]);
    c = mac8(c, As[1u * S4 + ty], As[1u * S4 + 16u + ty], Bs[1u * S4 + tx],
             Bs[1u * S4 + 16u + tx]);
    c = mac8(c, As[2u * S4 + ty], As[2u * S4 + 16u + ty], Bs[2u * S4 + tx],
             Bs[2u * S4 + 16u + tx]);
    c = mac8(c, As[3u * S4 + ty], As[3u * S4 + 16u + ty], Bs[3u * S4 + tx],
             Bs[3u * S4 + 16u + tx]);
    c = mac8(c, As[4u * S4 + ty], As[4u * S4 + 16u + ty], Bs[4u * S4 + tx],
             Bs[4u * S4 + 16u + tx]);
    c = mac8(c, As[5u * S4 + ty], As[5u * S4 + 16u + ty], Bs[5u * S4 + tx],
             Bs[5u * S4 + 16u + tx]);
    c = mac8(c, As[6u * S4 + ty], As[6u * S4 + 16u + ty], Bs[6u * S4 + tx],
             Bs[6u * S4 + 16u + tx]);
    c = mac8(c, As[7u * S4 + ty], As[7u * S4 + 16u + ty], Bs[7u * S4 + tx],
             Bs[7u * S4 + 16u + tx]);
    c = mac8(c, As[8u * S4 + ty], As[8u * S4 + 16u + ty], Bs[8u * S4 + tx],
             Bs[8u * S4 + 16u + tx]);
    c = mac8(c, As[9u * S4 + ty], As[9u * S4 + 16u + ty], Bs[9u * S4 + tx],
             Bs[9u * S4 + 16u + tx]);
    c = mac8(c, As[10u * S4 + ty], As[10u * S4 + 16u + ty], Bs[10u * S4 + tx],
             Bs[10u * S4 + 16u + tx]);
    c = mac8(c, As[11u * S4 + ty], As[11u * S4 + 16u + ty], Bs[11u * S4 + tx],
             Bs[11u * S4 + 16u + tx]);
    c = mac8(c, As[12u * S4 + ty], As[12u * S4 + 16u + ty], Bs[12u * S4 + tx],
             Bs[12u * S4 + 16u + tx]);
    c = mac8(c, As[13u * S4 + ty], As[13u * S4 + 16u + ty], Bs[13u * S4 + tx],
             Bs[13u * S4 + 16u + tx]);
    c = mac8(c, As[14u * S4 + ty], As[14u * S4 + 16u + ty], Bs[14u * S4 + tx],
             Bs[14u * S4 + 16u + tx]);
    c = mac8(c, As[15u * S4 + ty], As[15u * S4 + 16u + ty], Bs[15u * S4 + tx],
             Bs[15u * S4 + 16u + tx]);
    workgroupBarrier();
  }
  store8(wid.z, i0, j0, tx, ty, c);
}
