// Workgroup sums shared by the kernels (include with //#include "lib/reduce.wgsl").
// Each is a fixed-order shared-memory tree (deterministic), called by every thread of the
// workgroup in uniform control flow; every thread gets the total, and a closing barrier lets
// the caller sum again. A workgroup variable only takes memory in the entry points that use it.
//   workgroup_sum64   for @workgroup_size(64) kernels (a row per workgroup: the norms)
//   workgroup_sum256  for @workgroup_size(256) kernels (reduce.wgsl, adamw.wgsl's gradient norm)
// SwiftShader runs such barrier trees slowly (DESIGN.md): keep them out of per-token hot loops.

var<workgroup> sum64_part: array<f32, 64>;
var<workgroup> sum256_part: array<f32, 256>;

fn workgroup_sum64(lid: u32, v: f32) -> f32 {
  sum64_part[lid] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (lid < s) { sum64_part[lid] += sum64_part[lid + s]; }
    workgroupBarrier();
  }
  let total = sum64_part[0];
  workgroupBarrier();
  return total;
}

fn workgroup_sum256(lid: u32, v: f32) -> f32 {
  sum256_part[lid] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { sum256_part[lid] += sum256_part[lid + s]; }
    workgroupBarrier();
  }
  let total = sum256_part[0];
  workgroupBarrier();
  return total;
}
