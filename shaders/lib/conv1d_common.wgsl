// What conv1d_forward.wgsl and conv1d_backward.wgsl share (include with
// //#include "lib/conv1d_common.wgsl"): the flags, the Params the ops pack for every entry
// point (py_engine/ops/conv1d.py), the bindings both read, and the conv itself.
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
// Binding numbers are one space for both files (the ops pass one resource list layout).

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
@group(0) @binding(1) var<storage, read> x: array<f32>;              // [Bsz, T, I] view
@group(0) @binding(2) var<storage, read> w: array<f32>;              // [I, K]
@group(0) @binding(3) var<storage, read> bias: array<f32>;           // [I]
@group(0) @binding(5) var<storage, read> state_in: array<f32>;       // [Bsz, I, K]

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

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y + wid.z * nwg.y; }
