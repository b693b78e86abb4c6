// One decode token of Mamba-1's selective scan with dt_proj folded in (py_engine/ops/
// selective_scan.py: selective_scan_step with dt_w): channel i of sequence b
// computes its delta from x_proj's low-rank dt here, saving the dt_proj dispatch per layer:
//   delta = softplus(dt_low[b, :R] . dt_w[i, :R] + dt_bias[i])   (dt_low RMS-normed: Falcon)
//   h[n] = exp(delta A[i,n]) h[n] + delta u B[n];   y = C . h + D u;   y *= silu(z)   (flags)
// The same math as selective_scan_forward.wgsl for T = 1 (forward == step is tested per model).
// The kernel: lib/selective_scan_step_body.wgsl; its lane reductions in workgroup memory (the
// subgroup-shuffle variant: selective_scan_step_sg.wgsl).
const SUBGROUPS = false;
fn shuffle_xor2(v: vec2<f32>, mask: u32) -> vec2<f32> { return v; }   // unused: SUBGROUPS off
//#include "lib/selective_scan_step_body.wgsl"

@compute @workgroup_size(128)
fn selective_scan_step_dtproj(@builtin(local_invocation_id) lid3: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>) {
  scan_step_dtproj(lid3.x, wid, 0u);
}
