// Mamba-1 selective scan, backward (the forward, F1-F3, is selective_scan_forward.wgsl; the
// layout, flags and Params are in lib/selective_scan_common.wgsl). Forward math:
//   A = -exp(A_log);  dt = softplus(delta + dt_bias);  h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t
//   y_t = (C_t . h_t + D u_t) * silu(z_t)   (B_t, C_t RMS-normalised over N when NORM_BC)
//
// Backward (reverse-time; recomputes states inside each chunk from the saved hc):
//   g_t = dL/dh_t = dy0_t C_t + exp(dt_{t+1} A) g_{t+1},   dy0 = dy * silu(z)
//   B0 _backward_prep   per (r,i): dt, softplus'(x) = sigmoid(x) (1 above 20), dy0, dy*silu'(z)
//   B1 _backward_chunk  per (b,i,c): recompute h_t from hc[c] into HS [Bsz,T,I,N] (work),
//                       dz = dy silu'(z) (C.h + D u); local adjoint from 0 over the chunk:
//                       G_c = exp(dt_s A) g^loc_s, and sdt_c
//   B2 _backward_dc     per row r: dC_t = sum_i dy0_t[i] h_t[i, :]   (+ RMSNorm backward)
//   B3 _backward_carry  per (b,i,n), serial backwards over chunks: R_{nc-1} = dh_last,
//                       R_{c-1} = G_c + exp(A sdt_c) R_c (adjoint entering chunk c-1 from the
//                       right); dh0 = G_0 + exp(A sdt_0) R_0
//   B4 _backward        per (b,i,c), t from the chunk end down: g = R_c, g += dy0 C,
//                       ddt = sum_n g (exp(dt A) A h_{t-1} + B u); dA += g exp(dt A) dt h_{t-1};
//                       du = dy0 D + dt sum_n g B; ddelta = softplus' ddt; HS[t] <- g dt u
//                       (h_t is dead by then); per-(b,c) partials of dA, dD, d_dt_bias
//   B5 _backward_db     per row r: dB_t = sum_i HS[t, i, :]         (+ RMSNorm backward)
//   B6 _backward_params per i: dA_log = A * sum dA partials; dD; d_dt_bias (fixed order)
//   Work: recurrence 2x (B1 recompute + B4) + local adjoint (B1); memory (transient, one
//   layer at a time): Bsz*T*I*(N+4) + Bsz*nc*I*(N+3) floats. All reductions are fixed-order
//   loops: bit-identical reruns.

//#include "lib/selective_scan_common.wgsl"
//#include "lib/selective_scan_params.wgsl"

@group(0) @binding(13) var<storage, read> dy: array<f32>;           // [Bsz, T, I] view
@group(0) @binding(14) var<storage, read_write> du: array<f32>;     // [Bsz, T, I] view
@group(0) @binding(15) var<storage, read_write> ddelta: array<f32>; // [Bsz, T, I] view
@group(0) @binding(16) var<storage, read_write> dz: array<f32>;     // [Bsz, T, I] view
@group(0) @binding(17) var<storage, read_write> dB: array<f32>;     // [Bsz, T, N] view
@group(0) @binding(18) var<storage, read_write> dC: array<f32>;     // [Bsz, T, N] view
@group(0) @binding(19) var<storage, read_write> dA_log: array<f32>; // [I, N]
@group(0) @binding(20) var<storage, read_write> dD: array<f32>;     // [I]
@group(0) @binding(21) var<storage, read_write> ddt_bias: array<f32>; // [I]
@group(0) @binding(22) var<storage, read_write> dh0: array<f32>;    // [Bsz, I, N]
@group(0) @binding(23) var<storage, read> dh_last: array<f32>;      // [Bsz, I, N]

// B0: per (r, i): dt, softplus', dy0 = dy silu(z), dzs = dy silu'(z).
@compute @workgroup_size(64)
fn selective_scan_backward_prep(@builtin(global_invocation_id) gid: vec3<u32>,
                                @builtin(workgroup_id) wid: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x;
  let r = wid.y + wid.z * nwg.y;
  if (i >= p.I || r >= p.nb * p.T) { return; }
  var x = delta[p.dl_off + r * p.dl_str + i];
  if (has(HAS_BIAS)) { x += dt_bias[i]; }
  let k = r * p.I + i;
  work[p.w_dt + k] = softplus(x);
  work[p.w_sig + k] = select(sigmoid(x), 1.0, x > 20.0);
  let g = dy[p.y_off + r * p.y_str + i];
  if (has(HAS_Z)) {
    let zz = z[p.z_off + r * p.z_str + i];
    let s = sigmoid(zz);
    work[p.w_dy0 + k] = g * zz * s;
    work[p.w_dzs + k] = g * s * (1.0 + zz * (1.0 - s));
  } else {
    work[p.w_dy0 + k] = g;
  }
}

// Start state of chunk c (hc holds [Bsz, nc, I, N]; with nc = 1 it is h0, or 0 without HAS_INIT).
fn start_state(b: u32, c: u32, i: u32) -> array<f32, MAXN> {
  var h: array<f32, MAXN>;
  let read_start = p.nc > 1u || has(HAS_INIT);
  for (var n = 0u; n < NS; n++) {
    h[n] = 0.0;
    if (read_start) { h[n] = hc[sidx(b, c, i, n)]; }
  }
  return h;
}

// B1: recompute states into HS, dz, local adjoint G_c and sdt_c.
@compute @workgroup_size(64)
fn selective_scan_backward_chunk(@builtin(global_invocation_id) gid: vec3<u32>,
                                 @builtin(workgroup_id) wid: vec3<u32>) {
  let th = thread_of(gid, wid);
  if (!th.ok) { return; }
  let i = th.i;
  let a = load_a(i);
  var h = start_state(th.b, th.c, i);
  let D = d_at(i);
  var sdt = 0.0;
  for (var t = th.t0; t < th.t1; t++) {
    let r = th.b * p.T + t;
    let k = r * p.I + i;
    let dt = work[p.w_dt + k];
    let uu = u[p.u_off + r * p.u_str + i];
    let bt = load_b(r);
    let ct = load_c(r);
    let dbu = dt * uu;
    var y0 = 0.0;
    for (var n = 0u; n < NS; n++) {
      h[n] = exp(dt * a[n]) * h[n] + dbu * bt[n];
      work[p.w_hs + k * NS + n] = h[n];
      y0 += ct[n] * h[n];
    }
    sdt += dt;
    if (has(HAS_Z)) { dz[p.dz_off + r * p.dz_str + i] = work[p.w_dzs + k] * (y0 + D * uu); }
  }
  // Local adjoint from zero: G <- exp(dt_t A) (dy0_t C_t + G), t from the chunk end down.
  var G: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { G[n] = 0.0; }
  for (var t = th.t1; t > th.t0; t--) {
    let r = th.b * p.T + t - 1u;
    let k = r * p.I + i;
    let dt = work[p.w_dt + k];
    let g0 = work[p.w_dy0 + k];
    let ct = load_c(r);
    for (var n = 0u; n < NS; n++) { G[n] = exp(dt * a[n]) * (g0 * ct[n] + G[n]); }
  }
  for (var n = 0u; n < NS; n++) { work[p.w_g + sidx(th.b, th.c, i, n)] = G[n]; }
  work[p.w_sdt + (th.b * p.nc + th.c) * p.I + i] = sdt;
}

// B3: adjoint entering each chunk from the right, serial backwards; one thread per (b, i, n).
@compute @workgroup_size(64)
fn selective_scan_backward_carry(@builtin(global_invocation_id) gid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * 64u;
  if (k >= p.nb * p.I * NS) { return; }
  let n = k % NS;
  let i = (k / NS) % p.I;
  let b = k / (NS * p.I);
  let a = -exp(A_log[i * NS + n]);
  var R = 0.0;
  if (has(HAS_DH)) { R = dh_last[k]; }
  for (var c = p.nc; c > 0u; c--) {
    let idx = sidx(b, c - 1u, i, n);
    let G = work[p.w_g + idx];
    work[p.w_g + idx] = R;
    R = G + exp(a * work[p.w_sdt + (b * p.nc + c - 1u) * p.I + i]) * R;
  }
  if (has(WRITE_DH0)) { dh0[k] = R; }
}

// B4: the reverse scan proper.
@compute @workgroup_size(64)
fn selective_scan_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(workgroup_id) wid: vec3<u32>) {
  let th = thread_of(gid, wid);
  if (!th.ok) { return; }
  let i = th.i;
  let a = load_a(i);
  let D = d_at(i);
  var g: array<f32, MAXN>;
  var pa: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { g[n] = work[p.w_g + sidx(th.b, th.c, i, n)]; pa[n] = 0.0; }
  let h_start = start_state(th.b, th.c, i);
  var pd = 0.0;
  var pb = 0.0;
  for (var t = th.t1; t > th.t0; t--) {
    let r = th.b * p.T + t - 1u;
    let k = r * p.I + i;
    let dt = work[p.w_dt + k];
    let g0 = work[p.w_dy0 + k];
    let uu = u[p.u_off + r * p.u_str + i];
    let bt = load_b(r);
    let ct = load_c(r);
    var ddt = 0.0;
    var gb = 0.0;
    let first = t - 1u == th.t0;
    for (var n = 0u; n < NS; n++) {
      var hp: f32;
      if (first) { hp = h_start[n]; } else { hp = work[p.w_hs + (k - p.I) * NS + n]; }
      let gn = g[n] + g0 * ct[n];
      let ea = exp(dt * a[n]);
      ddt += gn * (ea * a[n] * hp + bt[n] * uu);
      pa[n] += gn * ea * dt * hp;
      gb += gn * bt[n];
      work[p.w_hs + k * NS + n] = gn * dt * uu;   // dB contribution; h_t is no longer needed
      g[n] = gn * ea;
    }
    du[p.du_off + r * p.du_str + i] = g0 * D + dt * gb;
    let dd = work[p.w_sig + k] * ddt;
    ddelta[p.dd_off + r * p.dd_str + i] = dd;
    pd += g0 * uu;
    pb += dd;
  }
  for (var n = 0u; n < NS; n++) { work[p.w_g + sidx(th.b, th.c, i, n)] = pa[n]; }
  let q = (th.b * p.nc + th.c) * p.I + i;
  work[p.w_pd + q] = pd;
  work[p.w_pb + q] = pb;
}

// dX_raw for X = RMSNorm(raw) over N: r (g - xhat mean(g xhat)), in place in v.
fn norm_backward(v: ptr<function, array<f32, MAXN>>, raw: array<f32, MAXN>) {
  var ss = 0.0;
  for (var n = 0u; n < NS; n++) { ss += raw[n] * raw[n]; }
  let s = inverseSqrt(ss / f32(NS) + p.eps);
  var m = 0.0;
  for (var n = 0u; n < NS; n++) { m += (*v)[n] * raw[n] * s; }
  m /= f32(NS);
  for (var n = 0u; n < NS; n++) { (*v)[n] = s * ((*v)[n] - raw[n] * s * m); }
}

// B2: dC_t = sum_i dy0_t[i] h_t[i, :], one thread per row.
@compute @workgroup_size(64)
fn selective_scan_backward_dc(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * 64u;
  if (r >= p.nb * p.T) { return; }
  var acc: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { acc[n] = 0.0; }
  for (var i = 0u; i < p.I; i++) {
    let k = r * p.I + i;
    let g0 = work[p.w_dy0 + k];
    for (var n = 0u; n < NS; n++) { acc[n] += g0 * work[p.w_hs + k * NS + n]; }
  }
  if (has(NORM_BC)) {
    var raw: array<f32, MAXN>;
    for (var n = 0u; n < NS; n++) { raw[n] = Cm[p.c_off + r * p.c_str + n]; }
    norm_backward(&acc, raw);
  }
  for (var n = 0u; n < NS; n++) { dC[p.dc_off + r * p.dc_str + n] = acc[n]; }
}

// B5: dB_t = sum_i g_t[i, :] dt_t[i] u_t[i] (left in HS by B4), one thread per row.
@compute @workgroup_size(64)
fn selective_scan_backward_db(@builtin(global_invocation_id) gid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * 64u;
  if (r >= p.nb * p.T) { return; }
  var acc: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { acc[n] = 0.0; }
  for (var i = 0u; i < p.I; i++) {
    let k = r * p.I + i;
    for (var n = 0u; n < NS; n++) { acc[n] += work[p.w_hs + k * NS + n]; }
  }
  if (has(NORM_BC)) {
    var raw: array<f32, MAXN>;
    for (var n = 0u; n < NS; n++) { raw[n] = Bm[p.b_off + r * p.b_str + n]; }
    norm_backward(&acc, raw);
  }
  for (var n = 0u; n < NS; n++) { dB[p.db_off + r * p.db_str + n] = acc[n]; }
}

// B6: parameter gradients from the per-(b, chunk) partials, fixed order.
@compute @workgroup_size(64)
fn selective_scan_backward_params(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.I) { return; }
  let acc = has(ACCUMULATE);
  for (var n = 0u; n < NS; n++) {
    var s = 0.0;
    for (var q = 0u; q < p.nb * p.nc; q++) { s += work[p.w_g + (q * p.I + i) * NS + n]; }
    var v = -exp(A_log[i * NS + n]) * s;     // dA_log = dA * dA/dA_log = dA * A
    if (acc) { v += dA_log[i * NS + n]; }
    dA_log[i * NS + n] = v;
  }
  var sd = 0.0;
  var sb = 0.0;
  for (var q = 0u; q < p.nb * p.nc; q++) {
    sd += work[p.w_pd + q * p.I + i];
    sb += work[p.w_pb + q * p.I + i];
  }
  if (has(HAS_D)) {
    if (acc) { sd += dD[i]; }
    dD[i] = sd;
  }
  if (has(HAS_BIAS)) {
    if (acc) { sb += ddt_bias[i]; }
    ddt_bias[i] = sb;
  }
}
