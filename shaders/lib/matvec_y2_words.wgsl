// The mat-vec's third output as words read and written atomically: what lets the workgroups of
// one dispatch pass Mamba-1's x_proj shares to one another (lib/matvec_xproj_gather.wgsl).
// WGSL's atomics are relaxed: each location is coherent, but nothing orders a store to one word
// before a store to another as another workgroup sees them. So a value carries its own
// validity: no stored value is the zero word (+0.0 goes in as -0.0, the same number in any
// sum), the reader takes each word and zeroes it in one atomicExchange -- a read-modify-write,
// which every backend performs coherently, where some compiled a WGSL atomicLoad as a plain,
// cacheable load (naga's HLSL and GLSL output before wgpu#9387) -- and takes it again while it
// was zero. A share store is an atomicStore: fire and forget, so no workgroup waits on the
// memory's round trip before it counts itself.
@group(0) @binding(8) var<storage, read_write> y2: array<atomic<u32>>;   // words (lib/matvec_xproj_gather.wgsl)

fn y2_set(idx: u32, v: f32) {
  let b = bitcast<u32>(v);
  atomicStore(&y2[idx], select(b, 0x80000000u, b == 0u));
}
fn y2_get(idx: u32) -> f32 { return bitcast<f32>(atomicLoad(&y2[idx])); }
