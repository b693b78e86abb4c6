// The selective scan's parameters, each through a binding of its own (the forward, backward and
// lanes kernels; the decode step with dt_proj reads them packed through one instead:
// lib/selective_scan_step_body.wgsl). Include after lib/selective_scan_common.wgsl.
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;       // [I]
@group(0) @binding(4) var<storage, read> A_log: array<f32>;         // [I, N]
@group(0) @binding(7) var<storage, read> Dv: array<f32>;            // [I]

fn d_param(i: u32) -> f32 { return Dv[i]; }
fn a_log_param(j: u32) -> f32 { return A_log[j]; }
