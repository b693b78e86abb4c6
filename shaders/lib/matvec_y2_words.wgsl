// The mat-vec's third output as words read and written atomically: what lets the workgroups of
// one dispatch pass Mamba-1's x_proj shares to one another (lib/matvec_xproj_gather.wgsl).
// WGSL's atomics are relaxed: each location is coherent, but nothing orders a store to one word
// before a store to another as another workgroup sees them. So a value carries its own
// validity: no stored value is the zero word (+0.0 goes in as -0.0, the same number in any
// sum), the reader waits for a word to turn non-zero and zeroes it as it reads it. Stores and
// reads are read-modify-writes (atomicExchange), which every backend performs coherently --
// some compiled a WGSL atomicLoad / atomicStore as a plain, cacheable access (naga's HLSL and
// GLSL output before wgpu#9387).
@group(0) @binding(8) var<storage, read_write> y2: array<atomic<u32>>;   // words (lib/matvec_xproj_gather.wgsl)

// This invocation's stores that found their word non-zero: a share a reader gave up on in an
// earlier dispatch, landed after it zeroed the word (the gather counts them with its give-ups).
var<private> y2_stale: u32;

fn y2_set(idx: u32, v: f32) {
  let b = bitcast<u32>(v);
  if (atomicExchange(&y2[idx], select(b, 0x80000000u, b == 0u)) != 0u) { y2_stale += 1u; }
}
fn y2_get(idx: u32) -> f32 { return bitcast<f32>(atomicLoad(&y2[idx])); }
