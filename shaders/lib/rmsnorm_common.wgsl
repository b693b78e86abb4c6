// What rmsnorm_forward.wgsl and rmsnorm_backward.wgsl share (include with
// //#include "lib/rmsnorm_common.wgsl"): the Params the ops pack for every entry point
// (py_engine/ops/rmsnorm.py), the bindings both read, and the optional weight.
// Rows are the leading dims flattened: x [rows, dim] row-major; one rstd per row.

struct Params { rows: u32, dim: u32, eps: f32, flags: u32 };   // flags: bit0 weight, bit1 accumulate

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // [rows, dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;           // [dim]

// w[j], or 1 when flags bit0 is clear (Falcon-Mamba's weightless norms on B, C and dt).
fn weight(j: u32) -> f32 {
  if ((p.flags & 1u) != 0u) { return w[j]; }
  return 1.0;
}

//#include "lib/reduce.wgsl"
