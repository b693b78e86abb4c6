// One decode token of Mamba-1's selective scan with dt_proj folded in (py_engine/ops/
// selective_scan.py: selective_scan_step with dt_w): each thread owns channel i of sequence b
// and computes its own delta from x_proj's low-rank dt, saving the dt_proj dispatch per layer:
//   delta = softplus(dt_low[b, :R] . dt_w[i, :R] + dt_bias[i])   (dt_low RMS-normed: Falcon)
//   h[n] = exp(delta A[i,n]) h[n] + delta u B[n];   y = C . h + D u;   y *= silu(z)   (flags)
// The same math as selective_scan_forward.wgsl for T = 1 (forward == step is tested per model).
//#include "lib/selective_scan_common.wgsl"

@group(0) @binding(9) var<storage, read_write> y: array<f32>;       // [Bsz, I] view
@group(0) @binding(10) var<storage, read_write> hs: array<f32>;     // state [Bsz, I, N], in place
@group(0) @binding(13) var<storage, read> dt_w: array<f32>;         // dt_proj.weight [I, R]

// grid: (ceil(I / 64), Bsz); the low-rank width R rides in Params._p0 (unused elsewhere here)
@compute @workgroup_size(64)
fn selective_scan_step_dtproj(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(workgroup_id) wid: vec3<u32>) {
  let i = gid.x;
  let b = wid.y;
  if (i >= p.I) { return; }
  let R = p._p0;
  var x = 0.0;
  var ss = 0.0;
  for (var k = 0u; k < R; k++) {
    let d = delta[p.dl_off + b * p.dl_str + k];
    x += d * dt_w[i * R + k];
    ss += d * d;
  }
  // Falcon-Mamba normalises dt_low (weightless RMSNorm, eps as for B and C) before dt_proj
  if (has(NORM_BC)) { x *= inverseSqrt(ss / f32(R) + p.eps); }
  if (has(HAS_BIAS)) { x += dt_bias[i]; }
  let dt = softplus(x);
  let a = load_a(i);
  let uu = u[p.u_off + b * p.u_str + i];
  let bt = load_b(b);
  let ct = load_c(b);
  let dbu = dt * uu;
  var acc = 0.0;
  for (var n = 0u; n < NS; n++) {
    let s = (b * p.I + i) * NS + n;
    let h = exp(dt * a[n]) * hs[s] + dbu * bt[n];
    hs[s] = h;
    acc += ct[n] * h;
  }
  var out = acc + d_at(i) * uu;
  if (has(HAS_Z)) { out *= silu(z[p.z_off + b * p.z_str + i]); }
  y[p.y_off + b * p.y_str + i] = out;
}
