// The shared-memory tiled GEMM's body: its staging, its K walk and its two tile sizes, shared
// by shaders/matmul_tiled.wgsl (one B, one C: the kernel's contract and design are described
// there) and shaders/matmul_tiled_multi.wgsl (up to three weights side by side, each into its
// own output). The including file declares binding 2 (`b`, read by its load_b), binding 4 (`c`:
// C, or the split-K partials) and its other outputs, and defines
//   fn load_b(c: vec2<u32>, l: u32, j0: u32, k0: u32, kend: u32) -> f32
//        B[k0 + c.y, j0 + c.x + l] (zero past N or kend)
//   fn put(i: u32, j: u32, x: f32)
//        C[i, j] from its finished sum x (with the bias and the old C as its flags ask)
// Params, split-K, the K slice and the store: lib/matmul_tiled_params.wgsl.

//#include "lib/matmul_tiled_params.wgsl"
//#include "lib/matmul_tiled_acc.wgsl"

@group(0) @binding(1) var<storage, read> a: array<f32>;          // A, strides (sa0, sa1)

// Staged slices, k-major with rows of S = BM + 4 cells: cell kk * S + ii holds A[i0 + ii, k0 + kk],
// of Bs B[k0 + kk, j0 + jj]; the arrays are of vec4s (S / 4 per row) so the product loop reads a
// thread's 4 rows (or columns) in one 16-byte load -- the scalar reads it did before were 4
// instructions each. The 4 cells of padding put the k-fast staging writes (8 or 16 consecutive
// threads, consecutive kk) in different banks; 4 keeps rows 16-byte aligned.
var<workgroup> As: array<vec4<f32>, 272>;   // [BK][(BM + 4) / 4]: 8 x 33 or 16 x 17 used
var<workgroup> Bs: array<vec4<f32>, 272>;

// What a thread stages per slice: one vec4 cell of each operand (4 consecutive rows of A, or
// columns of B, at one k; BM / 4 * BK = 256 cells), held in registers between the global loads
// that fetch it and one whole-vec4 store into workgroup memory. The loads of slice k0 + BK are
// issued before the products of slice k0 and arrive while they run (with the loads right before
// the barrier, every slice waited a global memory latency). Whole vec4s, because WGSL lets a
// write to one component of a vector touch all of it (Tint's HLSL rewrites the whole vector):
// four threads writing the components of one cell would race.
struct Slice { a: vec4<f32>, b: vec4<f32> };

// Thread lid's cell: (first of its 4 rows or columns, k). k-fast operands (A of x @ W^T and
// dY @ W, B of W read as W^T) give consecutive threads consecutive k, else consecutive cells.
fn cell(lid: u32, kfast: bool, BM: u32, BK: u32) -> vec2<u32> {
  if (kfast) { return vec2<u32>(4u * (lid / BK), lid % BK); }
  return vec2<u32>(4u * (lid % (BM / 4u)), lid / (BM / 4u));
}

fn load_a(c: vec2<u32>, l: u32, i0: u32, k0: u32, kend: u32) -> f32 {
  let i = i0 + c.x + l;
  let k = k0 + c.y;
  if (i < p.M && k < kend) { return a[i * p.sa0 + k * p.sa1]; }
  return 0.0;
}


// Thread lid's cells of both operands, fixed for the whole K walk.
struct Cells { a: vec2<u32>, b: vec2<u32> };

fn cells(lid: u32, BM: u32, BK: u32) -> Cells {
  return Cells(cell(lid, p.sa1 == 1u, BM, BK), cell(lid, p.sb0 == 1u, BM, BK));
}

fn load_slice(c: Cells, i0: u32, j0: u32, k0: u32, kend: u32) -> Slice {
  var s: Slice;
  s.a = vec4<f32>(load_a(c.a, 0u, i0, k0, kend), load_a(c.a, 1u, i0, k0, kend),
                  load_a(c.a, 2u, i0, k0, kend), load_a(c.a, 3u, i0, k0, kend));
  s.b = vec4<f32>(load_b(c.b, 0u, j0, k0, kend), load_b(c.b, 1u, j0, k0, kend),
                  load_b(c.b, 2u, j0, k0, kend), load_b(c.b, 3u, j0, k0, kend));
  return s;
}

fn store_slice(s: Slice, c: Cells, BM: u32) {
  let S4 = (BM + 4u) / 4u;
  As[c.a.y * S4 + c.a.x / 4u] = s.a;
  Bs[c.b.y * S4 + c.b.x / 4u] = s.b;
}


// Element idx of C summed over the S = p.K slices' partials a [S, M, N] (mn = M * N), in
// slice order: the split reduce's sum.
fn partials_sum(idx: u32, mn: u32) -> f32 {
  var x = 0.0;
  for (var z = 0u; z < p.K; z++) { x += a[z * mn + idx]; }
  return x;
}

// C (+)= the sum of the S slices' partials (a: the [S, M, N] partials, S = p.K here) through
// put: one thread per element of C, adding the slices in order (matmul_tiled_multi: of the
// combined C, each element into its own Y_g).
@compute @workgroup_size(256)
fn matmul_split_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 256u;
  let mn = p.M * p.N;
  if (idx >= mn) { return; }
  _ = b[0];                          // keeps binding 2 in the layout, as the tiled entries have it
  put(idx / p.N, idx % p.N, partials_sum(idx, mn));
}

// 128 x 128 block per workgroup; thread (tx, ty) owns rows {0, 64} + ty*4 + 0..3 and columns
// {0, 64} + tx*4 + 0..3 of it (Acc8).
@compute @workgroup_size(16, 16)
fn matmul_tiled_128(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_id) l3: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let i0 = wid.y * 128u;
  let j0 = wid.x * 128u;
  let tx = l3.x;
  let ty = l3.y;
  var c: Acc8;                          // zero-initialised
  let kr = k_range(wid.z);
  let cl = cells(lid, 128u, 8u);
  var next = load_slice(cl, i0, j0, kr.x, kr.y);
  for (var k0 = kr.x; k0 < kr.y; k0 += 8u) {
    store_slice(next, cl, 128u);
    workgroupBarrier();
    if (k0 + 8u < kr.y) { next = load_slice(cl, i0, j0, k0 + 8u, kr.y); }
    // k = 0 .. 7 of the slice, written out (lib/matmul_tiled_acc.wgsl says why)
    c = mac8(c, As[0u * 33u + ty], As[0u * 33u + 16u + ty], Bs[0u * 33u + tx],
             Bs[0u * 33u + 16u + tx]);
    c = mac8(c, As[1u * 33u + ty], As[1u * 33u + 16u + ty], Bs[1u * 33u + tx],
             Bs[1u * 33u + 16u + tx]);
    c = mac8(c, As[2u * 33u + ty], As[2u * 33u + 16u + ty], Bs[2u * 33u + tx],
             Bs[2u * 33u + 16u + tx]);
    c = mac8(c, As[3u * 33u + ty], As[3u * 33u + 16u + ty], Bs[3u * 33u + tx],
             Bs[3u * 33u + 16u + tx]);
    c = mac8(c, As[4u * 33u + ty], As[4u * 33u + 16u + ty], Bs[4u * 33u + tx],
             Bs[4u * 33u + 16u + tx]);
    c = mac8(c, As[5u * 33u + ty], As[5u * 33u + 16u + ty], Bs[5u * 33u + tx],
             Bs[5u * 33u + 16u + tx]);
    c = mac8(c, As[6u * 33u + ty], As[6u * 33u + 16u + ty], Bs[6u * 33u + tx],
             Bs[6u * 33u + 16u + tx]);
    c = mac8(c, As[7u * 33u + ty], As[7u * 33u + 16u + ty], Bs[7u * 33u + tx],
             Bs[7u * 33u + 16u + tx]);
    workgroupBarrier();
  }
  store8(wid.z, i0, j0, tx, ty, c);
}

// 64 x 64 block per workgroup; thread (tx, ty) owns rows ty*4 + 0..3, columns tx*4 + 0..3.
@compute @workgroup_size(16, 16)
fn matmul_tiled_64(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_id) l3: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let i0 = wid.y * 64u;
  let j0 = wid.x * 64u;
  let tx = l3.x;
  let ty = l3.y;
  var c: Acc4;                          // zero-initialised
  let kr = k_range(wid.z);
  let cl = cells(lid, 64u, 16u);
  var next = load_slice(cl, i0, j0, kr.x, kr.y);
  for (var k0 = kr.x; k0 < kr.y; k0 += 16u) {
    store_slice(next, cl, 64u);
    workgroupBarrier();
    if (k0 + 16u < kr.y) { next = load_slice(cl, i0, j0, k0 + 16u, kr.y); }
    // k = 0 .. 15 of the slice, written out (lib/matmul_tiled_acc.wgsl says why)
    c = mac4(c, As[0u * 17u + ty], Bs[0u * 17u + tx]);
    c = mac4(c, As[1u * 17u + ty], Bs[1u * 17u + tx]);
    c = mac4(c, As[2u * 17u + ty], Bs[2u * 17u + tx]);
    c = mac4(c, As[3u * 17u + ty], Bs[3u * 17u + tx]);
    c = mac4(c, As[4u * 17u + ty], Bs[4u * 17u + tx]);
    c = mac4(c, As[5u * 17u + ty], Bs[5u * 17u + tx]);
    c = mac4(c, As[6u * 17u + ty], Bs[6u * 17u + tx]);
    c = mac4(c, As[7u * 17u + ty], Bs[7u * 17u + tx]);
    c = mac4(c, As[8u * 17u + ty], Bs[8u * 17u + tx]);
    c = mac4(c, As[9u * 17u + ty], Bs[9u * 17u + tx]);
    c = mac4(c, As[10u * 17u + ty], Bs[10u * 17u + tx]);
    c = mac4(c, As[11u * 17u + ty], Bs[11u * 17u + tx]);
    c = mac4(c, As[12u * 17u + ty], Bs[12u * 17u + tx]);
    c = mac4(c, As[13u * 17u + ty], Bs[13u * 17u + tx]);
    c = mac4(c, As[14u * 17u + ty], Bs[14u * 17u + tx]);
    c = mac4(c, As[15u * 17u + ty], Bs[15u * 17u + tx]);
    workgroupBarrier();
  }
  store4(wid.z, i0 + ty * 4u + 0u, j0 + tx * 4u, c.r0);
  store4(wid.z, i0 + ty * 4u + 1u, j0 + tx * 4u, c.r1);
  store4(wid.z, i0 + ty * 4u + 2u, j0 + tx * 4u, c.r2);
  store4(wid.z, i0 + ty * 4u + 3u, j0 + tx * 4u, c.r3);
}
