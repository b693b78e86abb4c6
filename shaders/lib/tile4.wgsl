// A thread's 4 x 4 tile of a small matrix product kept in registers (ssd_chunked.wgsl,
// mamba3_chunk_tiles.wgsl): row i of the tile in r<i>, one vec4 over the columns, so one pair
// of 16-byte workgroup-memory loads feeds 16 multiply-adds. The includer declares the staged
// operands sv: array<vec4<f32>, WS4>.
struct Tile { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> };

// The tile plus the outer product of a (rows) and b (columns): r<i> + a[i] b, in that order.
fn tile_add(t: Tile, a: vec4<f32>, b: vec4<f32>) -> Tile {
  return Tile(t.r0 + a.x * b, t.r1 + a.y * b, t.r2 + a.z * b, t.r3 + a.w * b);
}

// t plus the outer products of sv[a + k a_step] (rows) and sv[b + k b_step] (columns), k < n,
// added in k order.
fn tile_run(t0: Tile, a: u32, a_step: u32, b: u32, b_step: u32, n: u32) -> Tile {
  var t = t0;
  for (var k = 0u; k < n; k++) { t = tile_add(t, sv[a + k * a_step], sv[b + k * b_step]); }
  return t;
}

// Column c of the tile (its four rows' c-th entries)
fn tile_col(t: Tile, c: u32) -> vec4<f32> { return vec4<f32>(t.r0[c], t.r1[c], t.r2[c], t.r3[c]); }

fn zero_tile() -> Tile { return Tile(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0)); }

// vec4s holding a values
fn vecs(a: u32) -> u32 { return (a + 3u) / 4u; }
