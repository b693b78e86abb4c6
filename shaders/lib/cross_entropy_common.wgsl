// What cross_entropy_forward.wgsl and cross_entropy_backward.wgsl share (include with
// //#include "lib/cross_entropy_common.wgsl"): the Params the ops pack for every entry point
// (py_engine/ops/cross_entropy.py) and the bindings both read.
// logits [T, V] row-major, targets [T] (negative = ignored), stats [3, T] = per-row loss,
// log-sum-exp and valid (1.0 / 0.0), written by the forward and read by the backward.

struct Params { rows: u32, vocab: u32, flags: u32, scale: f32 };   // scale: upstream dL/dloss

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // [T, V]
@group(0) @binding(2) var<storage, read> targets: array<i32>;      // [T]
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;  // [3*rows]: loss, lse, valid
