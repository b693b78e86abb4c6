// What elementwise_forward.wgsl and elementwise_backward.wgsl share (include with
// //#include "lib/elementwise_common.wgsl"): the Params the ops pack for every entry point
// (py_engine/ops/elementwise.py), the bindings, the folded index and the (accumulating) store.
// n f32 values, one thread each; the grid may be folded into y when n > 65535*256.

struct Params { n: u32, flags: u32, _p0: u32, _p1: u32 };   // flags: bit1 accumulate

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;           // [n]
@group(0) @binding(2) var<storage, read> b: array<f32>;           // [n]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [n]

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 256u; }

//#include "lib/activations.wgsl"

fn store(i: u32, v: f32) {
  if ((p.flags & 2u) != 0u) { out[i] += v; } else { out[i] = v; }
}
