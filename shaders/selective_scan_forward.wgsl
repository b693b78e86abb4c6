// Mamba-1 selective scan (state-spaces/mamba selective_scan_ref; transformers' MambaMixer):
// sequence forward (chunked, parallel in time) and one-token step. The layout, flags and
// Params are in lib/selective_scan_common.wgsl; the backward is selective_scan_backward.wgsl.
//
//   A    = -exp(A_log)                                    [I, N]
//   dt   = softplus(delta + dt_bias)   (threshold 20)     [Bsz, T, I]
//   h_t  = exp(dt_t A) * h_{t-1} + dt_t B_t u_t           [Bsz, I, N]   (ZOH for A, Euler for B)
//   y_t  = (C_t . h_t + D u_t) * silu(z_t)                [Bsz, T, I]
// Falcon-Mamba's weightless RMSNorm of B_t and C_t (over N, eps) is fused when NORM_BC is set.
//
// Forward over T tokens in nc chunks of L (nc = 1: just F3 from the initial state):
//   F1 selective_scan_forward_chunk  per (b,i,c): run the chunk from h = 0 -> S_c (local end
//                                    state), sdt_c = sum of dt over the chunk        [work]
//   F2 selective_scan_forward_carry  per (b,i,n), serial over chunks: H_0 = h0,
//                                    H_{c+1} = exp(A sdt_c) H_c + S_c -> hc[c] = H_c; final
//                                    state H_nc written in place into `hs` (which held h0)
//   F3 selective_scan_forward        per (b,i,c): rerun the chunk from H_c, writing y
//                                    (nc = 1: from h0, and writes the final state in place)
//   F1 and F3 have a "lanes" twin for real GPUs (selective_scan_lanes.wgsl: 16 threads per
//   (b,i,c), one state per lane; the op picks it, py_engine/ops/selective_scan.py scan_kernel).
//   Work: 2x the recurrence (F1 + F3), parallelism Bsz*I*nc threads. Memory: S_c + sdt +
//   hc = Bsz*nc*I*(2N+1) floats; hc is what the backward keeps (the chunk-boundary states).
//
// Step (decode): selective_scan_step = F3 for one token, state updated in place; dt softplus,
// D skip, silu(z) gating (and Falcon's B/C norms) fused: 1 dispatch per layer.

//#include "lib/selective_scan_common.wgsl"
//#include "lib/selective_scan_params.wgsl"

@group(0) @binding(9) var<storage, read_write> y: array<f32>;       // [Bsz, T, I] view
@group(0) @binding(10) var<storage, read_write> hs: array<f32>;     // state [Bsz,I,N] (in place) or hc

fn dt_at(r: u32, i: u32) -> f32 {
  var x = delta[p.dl_off + r * p.dl_str + i];
  if (has(HAS_BIAS)) { x += dt_bias[i]; }
  return softplus(x);
}

// F3 / step: run chunk c of (b, i) from its start state, writing y (and the final state).
fn scan_chunk(th: Thread) {
  let i = th.i;
  let a = load_a(i);
  var h: array<f32, MAXN>;
  let read_start = p.nc > 1u || has(HAS_INIT);
  for (var n = 0u; n < NS; n++) {
    h[n] = 0.0;
    if (read_start) { h[n] = hs[sidx(th.b, th.c, i, n)]; }
  }
  let D = d_at(i);
  for (var t = th.t0; t < th.t1; t++) {
    let r = th.b * p.T + t;
    let dt = dt_at(r, i);
    let uu = u[p.u_off + r * p.u_str + i];
    let bt = load_b(r);
    let ct = load_c(r);
    let dbu = dt * uu;
    var acc = 0.0;
    for (var n = 0u; n < NS; n++) {
      h[n] = exp(dt * a[n]) * h[n] + dbu * bt[n];
      acc += ct[n] * h[n];
    }
    var out = acc + D * uu;
    if (has(HAS_Z)) { out *= silu(z[p.z_off + r * p.z_str + i]); }
    y[p.y_off + r * p.y_str + i] = out;
  }
  if (has(WRITE_FINAL) && th.c + 1u == p.nc) {
    for (var n = 0u; n < NS; n++) { hs[sidx(th.b, th.c, i, n)] = h[n]; }
  }
}

@compute @workgroup_size(64)
fn selective_scan_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(workgroup_id) wid: vec3<u32>) {
  let th = thread_of(gid, wid);
  if (th.ok) { scan_chunk(th); }
}

// One token per sequence (T = 1, nc = 1), state [Bsz, I, N] in place in `hs`.
@compute @workgroup_size(64)
fn selective_scan_step(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(workgroup_id) wid: vec3<u32>) {
  let th = thread_of(gid, wid);
  if (th.ok) { scan_chunk(th); }
}

// F1: local end state from zero and sum of dt, per chunk. work: S at w_hs, sdt at w_sdt.
@compute @workgroup_size(64)
fn selective_scan_forward_chunk(@builtin(global_invocation_id) gid: vec3<u32>,
                                @builtin(workgroup_id) wid: vec3<u32>) {
  let th = thread_of(gid, wid);
  if (!th.ok) { return; }
  let i = th.i;
  let a = load_a(i);
  var h: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { h[n] = 0.0; }
  var sdt = 0.0;
  for (var t = th.t0; t < th.t1; t++) {
    let r = th.b * p.T + t;
    let dt = dt_at(r, i);
    let dbu = dt * u[p.u_off + r * p.u_str + i];
    let bt = load_b(r);
    sdt += dt;
    for (var n = 0u; n < NS; n++) { h[n] = exp(dt * a[n]) * h[n] + dbu * bt[n]; }
  }
  for (var n = 0u; n < NS; n++) { work[p.w_hs + sidx(th.b, th.c, i, n)] = h[n]; }
  work[p.w_sdt + (th.b * p.nc + th.c) * p.I + i] = sdt;
}

// F2: chunk start states, serial over chunks; one thread per (b, i, n).
@compute @workgroup_size(64)
fn selective_scan_forward_carry(@builtin(global_invocation_id) gid: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * 64u;
  if (k >= p.nb * p.I * NS) { return; }
  let n = k % NS;
  let i = (k / NS) % p.I;
  let b = k / (NS * p.I);
  let a = -exp(A_log[i * NS + n]);
  var H = 0.0;
  let st = (b * p.I + i) * NS + n;
  if (has(HAS_INIT)) { H = hs[st]; }
  for (var c = 0u; c < p.nc; c++) {
    let idx = sidx(b, c, i, n);
    let S = work[p.w_hs + idx];
    hc[idx] = H;
    H = exp(a * work[p.w_sdt + (b * p.nc + c) * p.I + i]) * H + S;
  }
  if (has(WRITE_FINAL)) { hs[st] = H; }
}
