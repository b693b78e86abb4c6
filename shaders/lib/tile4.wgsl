// A thread's 4 x 4 tile of a small matrix product kept in registers (ssd_chunked.wgsl,
// mamba3_chunk_tiles.wgsl): row i of the tile in r<i>, one vec4 over the columns, so one pair
// of 16-byte workgroup-memory loads feeds 16 multiply-adds.
struct Tile { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> };

// The tile plus the outer product of a (rows) and b (columns): r<i> + a[i] b, in that order.
fn tile_add(t: Tile, a: vec4<f32>, b: vec4<f32>) -> Tile {
  return Tile(t.r0 + a.x * b, t.r1 + a.y * b, t.r2 + a.z * b, t.r3 + a.w * b);
}

fn zero_tile() -> Tile { return Tile(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0)); }

// vec4s holding a values
fn vecs(a: u32) -> u32 { return (a + 3u) / 4u; }
