// What selective_scan_forward.wgsl and selective_scan_backward.wgsl share (include with
// //#include "lib/selective_scan_common.wgsl"): the flags, the NS override, the Params the ops
// pack for every entry point (py_engine/ops/selective_scan.py), the bindings both use, and the
// per-thread loads of A, B, C and D.
//
// Layout: token rows r = b*T + t. u, delta, B, C, z, y and every per-token gradient are
// "views" (element (r, j) at off + r*stride + j), so B/C are read straight out of x_proj's
// [dt_low | B | C] output and z out of in_proj's [x | z]. A_log [I, N], D [I], dt_bias [I];
// states [Bsz, I, N]; chunk states hc [Bsz, nc, I, N] (state before the first token of each
// chunk). One thread owns one (b, channel i, chunk c) and keeps its N (<= 16) states in
// registers: no barriers, no workgroup memory, no atomics; grids are (ceil(I/64), nc*Bsz).
// selective_scan_lanes.wgsl (real GPUs) runs F1 / F3 with 16 threads per (b, i, c) instead.
// Binding numbers are one space for both files (the ops pass one resource list layout).

const HAS_Z = 1u;
const HAS_BIAS = 2u;     // dt_bias given
const HAS_INIT = 4u;     // initial state: read hs (forward) / hc (backward, nc = 1); else 0
const WRITE_FINAL = 8u;  // write the final state into hs
const NORM_BC = 16u;     // Falcon-Mamba: B_t, C_t <- B_t / rms(B_t), C_t / rms(C_t)
const HAS_DH = 32u;      // backward: dh_last given
const ACCUMULATE = 64u;  // backward: dA_log, dD, d_dt_bias +=
const HAS_D = 128u;
const WRITE_DH0 = 256u;
const MAXN = 16u;

override NS: u32 = 16u;  // state size N (<= MAXN); a pipeline constant so loops unroll

struct Params {
  T: u32, I: u32, N: u32, flags: u32,
  L: u32, nc: u32, nb: u32, eps: f32,
  u_off: u32, u_str: u32, dl_off: u32, dl_str: u32,   // u, delta
  b_off: u32, b_str: u32, c_off: u32, c_str: u32,     // B, C
  z_off: u32, z_str: u32, y_off: u32, y_str: u32,     // z; y (forward) or dy (backward)
  du_off: u32, du_str: u32, dd_off: u32, dd_str: u32, // du, ddelta
  dz_off: u32, dz_str: u32, db_off: u32, db_str: u32, // dz, dB
  dc_off: u32, dc_str: u32, _p0: u32, _p1: u32,       // dC
  w_dt: u32, w_sig: u32, w_dy0: u32, w_dzs: u32,      // work regions (element offsets)
  w_hs: u32, w_g: u32, w_sdt: u32, w_pd: u32,
  w_pb: u32, _p2: u32, _p3: u32, _p4: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<f32>;             // [Bsz, T, I] view
@group(0) @binding(2) var<storage, read> delta: array<f32>;         // [Bsz, T, I] view, before dt_bias
@group(0) @binding(5) var<storage, read> Bm: array<f32>;            // [Bsz, T, N] view
@group(0) @binding(6) var<storage, read> Cm: array<f32>;            // [Bsz, T, N] view
@group(0) @binding(8) var<storage, read> z: array<f32>;             // [Bsz, T, I] view
@group(0) @binding(11) var<storage, read_write> hc: array<f32>;     // chunk states [Bsz,nc,I,N]
@group(0) @binding(12) var<storage, read_write> work: array<f32>;   // scratch, regions at p.w_*

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// The including file defines the parameters' reads: fn d_param(i: u32) -> f32 (D[i]) and
// fn a_log_param(j: u32) -> f32 (A_log[j], j = i * N + n) -- through their own bindings
// (lib/selective_scan_params.wgsl: the scan's forward and backward) or through the decode step's
// one packed binding (lib/selective_scan_step_body.wgsl).

//#include "lib/activations.wgsl"

fn d_at(i: u32) -> f32 {
  if (has(HAS_D)) { return d_param(i); }
  return 0.0;
}

// Row r of B (or C), RMS-normalised over N when NORM_BC.
fn load_b(r: u32) -> array<f32, MAXN> {
  var v: array<f32, MAXN>;
  var ss = 0.0;
  for (var n = 0u; n < NS; n++) { v[n] = Bm[p.b_off + r * p.b_str + n]; ss += v[n] * v[n]; }
  if (has(NORM_BC)) {
    let s = inverseSqrt(ss / f32(NS) + p.eps);
    for (var n = 0u; n < NS; n++) { v[n] *= s; }
  }
  return v;
}

fn load_c(r: u32) -> array<f32, MAXN> {
  var v: array<f32, MAXN>;
  var ss = 0.0;
  for (var n = 0u; n < NS; n++) { v[n] = Cm[p.c_off + r * p.c_str + n]; ss += v[n] * v[n]; }
  if (has(NORM_BC)) {
    let s = inverseSqrt(ss / f32(NS) + p.eps);
    for (var n = 0u; n < NS; n++) { v[n] *= s; }
  }
  return v;
}

fn load_a(i: u32) -> array<f32, MAXN> {
  var a: array<f32, MAXN>;
  for (var n = 0u; n < NS; n++) { a[n] = -exp(a_log_param(i * NS + n)); }
  return a;
}

// Index of state (b, c, i, n) in a [Bsz, nc, I, N] array (nc = 1: a [Bsz, I, N] state).
fn sidx(b: u32, c: u32, i: u32, n: u32) -> u32 { return ((b * p.nc + c) * p.I + i) * NS + n; }

struct Thread { b: u32, c: u32, i: u32, t0: u32, t1: u32, ok: bool };

// Thread for (b, i, c): x over channels, y over nc * Bsz.
fn thread_of(gid: vec3<u32>, wid: vec3<u32>) -> Thread {
  var th: Thread;
  th.i = gid.x;
  th.c = wid.y % p.nc;
  th.b = wid.y / p.nc;
  th.t0 = th.c * p.L;
  th.t1 = min(th.t0 + p.L, p.T);
  th.ok = th.i < p.I && th.b < p.nb;
  return th;
}
