// Sum of n f32 values in two passes: 256-thread workgroups write partial sums, then one
// workgroup adds those up and multiplies by `scale` (1 for sum, 1/n for mean).

struct Params { n: u32, scale: f32, _p0: u32, _p1: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

//#include "lib/reduce.wgsl"

// Each workgroup handles a contiguous chunk of ceil(n / groups) values.
@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let chunk = (p.n + nwg.x - 1u) / nwg.x;
  let start = wid.x * chunk;
  let end = min(start + chunk, p.n);
  var s = 0.0;
  for (var i = start + lid; i < end; i += 256u) { s += x[i]; }
  let total = workgroup_sum256(lid, s);
  if (lid == 0u) { out[wid.x] = total; }
}

@compute @workgroup_size(256)
fn sum_final(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i += 256u) { s += x[i]; }
  let total = workgroup_sum256(lid, s);
  if (lid == 0u) { out[0] = total * p.scale; }
}

// Exact checksum of a tensor's bytes: sum over i of bits[i] * (2654435761 * i + 1), mod 2^32.
// u32 addition wraps and is commutative, so any summation order gives the same value, and the
// host reproduces it with numpy uint32 (tests compare loaded tensors without reading them back).
@group(0) @binding(3) var<storage, read> words: array<u32>;
@group(0) @binding(4) var<storage, read_write> sums: array<u32>;
var<workgroup> upart: array<u32, 256>;

@compute @workgroup_size(256)
fn checksum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let chunk = (p.n + nwg.x - 1u) / nwg.x;
  let start = wid.x * chunk;
  let end = min(start + chunk, p.n);
  var s = 0u;
  for (var i = start + lid; i < end; i += 256u) { s += words[i] * (2654435761u * i + 1u); }
  upart[lid] = s;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (lid < k) { upart[lid] += upart[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) { sums[wid.x] = upart[0]; }
}
