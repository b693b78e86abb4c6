// Depthwise causal conv1d of Mamba-1 / Falcon-Mamba (kernel K <= 8, per-channel bias, optional
// fused SiLU), over a batch of sequences and one token at a time.
//
// Layout: activations are token-major rows, r = b*T + t, of I channels. Every activation operand
// is a column window of a row-major matrix ("view"): element (r, i) sits at off + r*stride + i,
// so x can be read straight out of in_proj's [x | z] output and dx written into its gradient.
//   w [I, K]     (PyTorch conv1d weight [I, 1, K] squeezed)      bias [I]
//   state [Bsz, I, K]: the last K inputs of the sequence, oldest in column 0, newest in K-1
//                (transformers' conv cache; zero on the left when fewer than K were seen)
//
//   pre[t, i] = bias[i] + sum_k w[i, k] * x[t - (K-1) + k, i]   (x[s] for s < 0 comes from the
//               initial state, state[i, K + s], or is 0)           y = SILU ? silu(pre) : pre
//
// Backward, with g[t] = dy[t] (* silu'(pre[t]) when SILU; pre is recomputed, K MACs):
//   dx[t, i] = sum_k g[t + (K-1) - k, i] * w[i, k]         (terms past T-1 are 0)
//   dw[i, k] = sum_{b,t} g[t, i] * x[t - (K-1) + k, i];    db[i] = sum_{b,t} g[t, i]
// dw/db are reduced deterministically: per-(row chunk, channel) partials, then a fixed-order
// sum over chunks (WGSL has no float atomics, and we want bit-identical reruns anyway).
//
// Entry points (all one thread per output element; no barriers, no workgroup memory):
//   conv1d_forward        grid (ceil(I/64), rows...): y, and the final state when WRITE_STATE
//   conv1d_step           one token, state updated in place: shift left, append x_t, y = sum(state*w)+b
//   conv1d_backward       dx
//   conv1d_backward_weight  partial[c, i, 0..K] (K taps + bias) over rows [c*RC, (c+1)*RC)
//   conv1d_backward_reduce  dw, db (+)= sum_c partial[c]

const SILU = 1u;         // fuse SiLU after the conv (forward/step: apply; backward: differentiate)
const HAS_BIAS = 2u;
const HAS_STATE = 4u;    // forward/backward: x before t = 0 comes from state_in
const WRITE_STATE = 8u;  // forward: write the final conv state into state_out
const ACCUMULATE = 16u;  // backward: dx/dw/db += instead of =
const MAXK = 8u;

struct Params {
  T: u32, I: u32, K: u32, flags: u32,
  nb: u32, rows_out: u32, rc: u32, nchunks: u32,   // batch, rows this grid covers, rows per chunk
  x_off: u32, x_str: u32, o_off: u32, o_str: u32,  // x view; output view (y or dx)
  g_off: u32, g_str: u32, _p0: u32, _p1: u32,      // dy view (backward)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // y / dx
@group(0) @binding(5) var<storage, read> state_in: array<f32>;       // [Bsz, I, K]
@group(0) @binding(6) var<storage, read_write> state: array<f32>;    // forward: state_out; step: in place
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;  // [nchunks, I, K+1]
@group(0) @binding(9) var<storage, read_write> dw: array<f32>;       // [I, K]
@group(0) @binding(10) var<storage, read_write> db: array<f32>;      // [I]

//#include "lib/activations.wgsl"

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// Input of sequence b at time s (s may be negative: the initial state, or zero padding).
fn xin(b: u32, s: i32, i: u32) -> f32 {
  if (s >= 0) { return x[p.x_off + (b * p.T + u32(s)) * p.x_str + i]; }
  if (has(HAS_STATE)) { return state_in[(b * p.I + i) * p.K + u32(i32(p.K) + s)]; }
  return 0.0;
}

// Conv output before the activation.
fn pre(b: u32, t: u32, i: u32) -> f32 {
  var acc = 0.0;
  if (has(HAS_BIAS)) { acc = bias[i]; }
  let t0 = i32(t) - i32(p.K) + 1;
  for (var k = 0u; k < p.K; k++) { acc += w[i * p.K + k] * xin(b, t0 + i32(k), i); }
  return acc;
}

// dL/dpre at (b, t, i).
fn gpre(b: u32, t: u32, i: u32) -> f32 {
  let g = dy[p.g_off + (b * p.T + t) * p.g_str + i];
  if (has(SILU)) { return g * dsilu(pre(b, t, i)); }
  return g;
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y + wid.z * nwg.y; }

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
