// Depthwise causal conv1d of Mamba-1 / Falcon-Mamba, backward (the forward, its layout and
// pre[t, i] are conv1d_forward.wgsl and lib/conv1d_common.wgsl).
//
// With g[t] = dy[t] (* silu'(pre[t]) when SILU; pre is recomputed, K MACs):
//   dx[t, i] = sum_k g[t + (K-1) - k, i] * w[i, k]         (terms past T-1 are 0)
//   dw[i, k] = sum_{b,t} g[t, i] * x[t - (K-1) + k, i];    db[i] = sum_{b,t} g[t, i]
// dw/db are reduced deterministically: per-(row chunk, channel) partials, then a fixed-order
// sum over chunks (WGSL has no float atomics, and we want bit-identical reruns anyway).
//
// Entry points (all one thread per output element; no barriers, no workgroup memory):
//   conv1d_backward       dx
//   conv1d_backward_weight  partial[c, i, 0..K] (K taps + bias) over rows [c*RC, (c+1)*RC)
//   conv1d_backward_reduce  dw, db (+)= sum_c partial[c]

//#include "lib/conv1d_common.wgsl"

@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // dx [Bsz, T, I] view
@group(0) @binding(7) var<storage, read> dy: array<f32>;             // [Bsz, T, I] view
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;  // [nchunks, I, K+1]
@group(0) @binding(9) var<storage, read_write> dw: array<f32>;       // [I, K]
@group(0) @binding(10) var<storage, read_write> db: array<f32>;      // [I]

// dL/dpre at (b, t, i).
fn gpre(b: u32, t: u32, i: u32) -> f32 {
  let g = dy[p.g_off + (b * p.T + t) * p.g_str + i];
  if (has(SILU)) { return g * dsilu(pre(b, t, i)); }
  return g;
}

@compute @workgroup_size(64)
fn conv1d_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x;
  let row = row_of(wid, nwg);
  if (i >= p.I || row >= p.nb * p.T) { return; }
  let b = row / p.T;
  let t = row % p.T;
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let s = t + p.K - 1u - k;              // the output that read x[t] through tap k
    if (s < p.T) { acc += gpre(b, s, i) * w[i * p.K + k]; }
  }
  let idx = p.o_off + row * p.o_str + i;
  if (has(ACCUMULATE)) { acc += out[idx]; }
  out[idx] = acc;
}

@compute @workgroup_size(64)
fn conv1d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let c = gid.y;
  if (i >= p.I || c >= p.nchunks) { return; }
  var acc: array<f32, MAXK>;
  for (var k = 0u; k < MAXK; k++) { acc[k] = 0.0; }
  var accb = 0.0;
  let r1 = min((c + 1u) * p.rc, p.nb * p.T);
  for (var r = c * p.rc; r < r1; r++) {
    let b = r / p.T;
    let t = r % p.T;
    let g = gpre(b, t, i);
    accb += g;
    let t0 = i32(t) - i32(p.K) + 1;
    for (var k = 0u; k < p.K; k++) { acc[k] += g * xin(b, t0 + i32(k), i); }
  }
  let base = (c * p.I + i) * (p.K + 1u);
  for (var k = 0u; k < p.K; k++) { partial[base + k] = acc[k]; }
  partial[base + p.K] = accb;
}

@compute @workgroup_size(64)
fn conv1d_backward_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.I) { return; }
  for (var k = 0u; k <= p.K; k++) {
    var s = 0.0;
    for (var c = 0u; c < p.nchunks; c++) { s += partial[(c * p.I + i) * (p.K + 1u) + k]; }
    if (k < p.K) {
      if (has(ACCUMULATE)) { s += dw[i * p.K + k]; }
      dw[i * p.K + k] = s;
    } else if (has(HAS_BIAS)) {
      if (has(ACCUMULATE)) { s += db[i]; }
      db[i] = s;
    }
  }
}
