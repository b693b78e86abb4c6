// Depthwise causal conv1d of Mamba-1 / Falcon-Mamba (kernel K <= 8, per-channel bias, optional
// fused SiLU), over a batch of sequences and one token at a time. The layout, the Params and
// pre[t, i] (the conv before the activation) are in lib/conv1d_common.wgsl; the backward is
// conv1d_backward.wgsl.
//
//   y[t, i] = SILU ? silu(pre[t, i]) : pre[t, i]
//
// Entry points (no barriers, no workgroup memory):
//   conv1d_forward        grid (ceil(I/64), rows...): y, and the final state when WRITE_STATE
//   conv1d_forward4       the same for K = 4, four tokens per thread (the ops' choice at K = 4)
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

// conv1d_forward for K = 4 (every Mamba's d_conv): thread (i, g) writes channel i of the four
// tokens t0 = 4g .. t0 + 3 of its sequence. Grid (ceil(I/64), rows...) over Bsz * ceil(rows_out/4)
// groups. Its seven inputs x[t0 - 3 .. t0 + 3, i] and four weights load together, written out:
// conv1d_forward loads 4 per token, one tap after the other in a loop whose trip count (p.K)
// the compiler cannot see -- Tint (Chrome's WebGPU) adds a counter of its own to every loop --
// so each load waited for the one before (an H200 through Dawn: 84 us at mamba-1.4b's 1,024 x
// 4,096). Each output is the same sum in the same order as pre(): bias, then taps 0..3.
struct X7 { m3: f32, m2: f32, m1: f32, x0: f32, x1: f32, x2: f32, x3: f32 };

// x[s, i] for s < T (before the sequence: xin's state or 0; past its end: 0, never stored).
fn xin_t(b: u32, s: i32, i: u32) -> f32 {
  if (s >= i32(p.T)) { return 0.0; }
  return xin(b, s, i);
}

fn conv4_out(b: u32, t: u32, i: u32, acc0: f32, w4: vec4<f32>, a: f32, bb: f32, c: f32, d: f32) {
  if (t >= p.T) { return; }
  var acc = acc0;
  acc += w4.x * a;
  acc += w4.y * bb;
  acc += w4.z * c;
  acc += w4.w * d;
  if (has(SILU)) { acc = silu(acc); }
  out[p.o_off + (b * p.T + t) * p.o_str + i] = acc;
}

@compute @workgroup_size(64)
fn conv1d_forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x;
  let gq = (p.rows_out + 3u) / 4u;         // groups of 4 tokens per sequence
  let row = row_of(wid, nwg);
  if (i >= p.I || row >= p.nb * gq) { return; }
  let b = row / gq;
  let t0 = (row % gq) * 4u;
  let s0 = i32(t0);
  var v: X7;
  v.m3 = xin_t(b, s0 - 3, i);
  v.m2 = xin_t(b, s0 - 2, i);
  v.m1 = xin_t(b, s0 - 1, i);
  v.x0 = xin_t(b, s0, i);
  v.x1 = xin_t(b, s0 + 1, i);
  v.x2 = xin_t(b, s0 + 2, i);
  v.x3 = xin_t(b, s0 + 3, i);
  let w4 = vec4<f32>(w[i * 4u], w[i * 4u + 1u], w[i * 4u + 2u], w[i * 4u + 3u]);
  var acc0 = 0.0;
  if (has(HAS_BIAS)) { acc0 = bias[i]; }
  conv4_out(b, t0, i, acc0, w4, v.m3, v.m2, v.m1, v.x0);
  conv4_out(b, t0 + 1u, i, acc0, w4, v.m2, v.m1, v.x0, v.x1);
  conv4_out(b, t0 + 2u, i, acc0, w4, v.m1, v.x0, v.x1, v.x2);
  conv4_out(b, t0 + 3u, i, acc0, w4, v.x0, v.x1, v.x2, v.x3);
  // state_out[b, i, k] = x[T - 4 + k] (from state_in or 0 before the sequence start)
  if (has(WRITE_STATE) && t0 == 0u) {
    let base = (b * p.I + i) * 4u;
    let sT = i32(p.T);
    state[base] = xin(b, sT - 4, i);
    state[base + 1u] = xin(b, sT - 3, i);
    state[base + 2u] = xin(b, sT - 2, i);
    state[base + 3u] = xin(b, sT - 1, i);
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
