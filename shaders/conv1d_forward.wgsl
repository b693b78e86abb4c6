// Depthwise causal conv1d of Mamba-1 / Falcon-Mamba (kernel K <= 8, per-channel bias, optional
// fused SiLU), over a batch of sequences and one token at a time. The layout, the Params and
// pre[t, i] (the conv before the activation) are in lib/conv1d_common.wgsl; the backward is
// conv1d_backward.wgsl.
//
//   y[t, i] = SILU ? silu(pre[t, i]) : pre[t, i]
//
// Entry points (all one thread per output element; no barriers, no workgroup memory):
//   conv1d_forward        grid (ceil(I/64), rows...): y, and the final state when WRITE_STATE
//   conv1d_step           one token, state updated in place: shift left, append x_t, y = sum(state*w)+b

//#include "lib/conv1d_common.wgsl"

@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // y [Bsz, T, I] view
@group(0) @binding(6) var<storage, read_write> state: array<f32>;    // [Bsz, I, K]: state_out; step: in place

@compute @workgroup_size(64)
fn conv1d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x;
  let row = row_of(wid, nwg);              // over Bsz * max(T, K) when WRITE_STATE, else Bsz * T
  if (i >= p.I || row >= p.nb * p.rows_out) { return; }
  let b = row / p.rows_out;
  let t = row % p.rows_out;
  if (t < p.T) {
    var v = pre(b, t, i);
    if (has(SILU)) { v = silu(v); }
    out[p.o_off + (b * p.T + t) * p.o_str + i] = v;
  }
  // state_out[b, i, k] = x[T - K + k] (from state_in or 0 before the sequence start)
  if (has(WRITE_STATE) && t < p.K) {
    state[(b * p.I + i) * p.K + t] = xin(b, i32(p.T) - i32(p.K) + i32(t), i);
  }
}

// One token per sequence: x [Bsz, I] view (T = 1), state [Bsz, I, K] updated in place.
@compute @workgroup_size(64)
fn conv1d_step(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let b = gid.y;
  if (i >= p.I || b >= p.nb) { return; }
  let base = (b * p.I + i) * p.K;
  var acc = 0.0;
  if (has(HAS_BIAS)) { acc = bias[i]; }
  for (var k = 0u; k < p.K; k++) {
    var v: f32;
    if (k + 1u < p.K) { v = state[base + k + 1u]; } else { v = x[p.x_off + b * p.x_str + i]; }
    state[base + k] = v;
    acc += v * w[i * p.K + k];
  }
  if (has(SILU)) { acc = silu(acc); }
  out[p.o_off + b * p.o_str + i] = acc;
}
