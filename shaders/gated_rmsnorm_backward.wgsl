// Gated, grouped RMSNorm of Mamba-2 (norm_before_gate=False), backward. Forward, per row r and
// group g of S = I/G consecutive channels (gated_rmsnorm_forward.wgsl):
//   v = y * silu(z);  rstd = 1 / sqrt(mean_g(v^2) + eps);  out = v * rstd * w
// With gv = dout * w (per channel) and r = rstd[r, g]:
//   dv[c] = r * gv[c] - v[c] * r^3 * sum_{j in g}(gv[j] v[j]) / S
//   dy[c] = dv[c] * silu(z[c]);   dz[c] = dv[c] * y[c] * silu'(z[c])
//   dw[c] = sum_rows dout[c] * v[c] * r
// v is recomputed from y and z (a multiply and an exp per element), never stored.
// NORM_BEFORE_GATE (Mamba-3's is_outproj_norm; forward out = y * rstd(y) * w * silu(z)), with
// gu = dout * w * silu(z) and r = rstd of y:
//   dy[c] = r * gu[c] - y[c] * r^3 * sum_{j in g}(gu[j] y[j]) / S;  dz[c] = dout y r w silu'(z)
//   dw[c] = sum_rows dout[c] * y[c] * silu(z[c]) * r   (the same expression as the default's)
//
// Layout: every [M, I] operand (y, z, dout, dy, dz) is a column window of a row-major matrix
// ("view", as in conv1d.wgsl): element (r, c) at off + r*stride + c, so dz is written straight
// into the z window of in_proj's gradient. w [I]; rstd [M, G] from the forward pass.
//
// Entry points:
//   gated_rmsnorm_backward         one 64-thread workgroup per (group, row), grid (G, rows
//                                  folded into y/z): one 64-wide tree for the dot, then dy, dz
//   gated_rmsnorm_backward_weight  one thread per (channel, chunk of RC rows), grid (ceil(I/64),
//                                  nchunks): the chunk's dw partial; with one chunk it writes
//                                  (or, ACCUMULATE, adds into) dw directly
//   gated_rmsnorm_backward_reduce  one thread per channel: dw (+)= sum over chunks, in order
// dw is deterministic: fixed-order partials and a fixed-order reduce, no atomics (WGSL has no
// float atomics, and reruns must be bit-identical).

const ACCUMULATE = 1u;   // dw += instead of =
const NORM_BEFORE_GATE = 2u;   // Mamba-3's is_outproj_norm: out = RMSNorm(y) * w * silu(z)

struct Params {
  rows: u32, I: u32, S: u32, G: u32,                 // M, channels, group size, groups
  eps: f32, flags: u32, rc: u32, nchunks: u32,       // rows per dw chunk, chunks
  y_off: u32, y_str: u32, z_off: u32, z_str: u32,    // y view; z view
  dy_off: u32, dy_str: u32, g_off: u32, g_str: u32,  // dy view; dout view
  dz_off: u32, dz_str: u32, _p0: u32, _p1: u32,      // dz view
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;              // [M, I] view
@group(0) @binding(2) var<storage, read> z: array<f32>;              // [M, I] view (the gate)
@group(0) @binding(3) var<storage, read> w: array<f32>;              // [I]
@group(0) @binding(4) var<storage, read_write> dy: array<f32>;       // [M, I] view
@group(0) @binding(5) var<storage, read> rstd: array<f32>;           // [M, G]
@group(0) @binding(6) var<storage, read> dout: array<f32>;           // [M, I] view
@group(0) @binding(7) var<storage, read_write> dz: array<f32>;       // [M, I] view
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;  // [nchunks, I]
@group(0) @binding(9) var<storage, read_write> dw: array<f32>;       // [I]

//#include "lib/activations.wgsl"
//#include "lib/reduce.wgsl"

fn yv(row: u32, c: u32) -> f32 { return y[p.y_off + row * p.y_str + c]; }
fn zv(row: u32, c: u32) -> f32 { return z[p.z_off + row * p.z_str + c]; }
fn gout(row: u32, c: u32) -> f32 { return dout[p.g_off + row * p.g_str + c]; }

@compute @workgroup_size(64)
fn gated_rmsnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
  let g = wid.x;
  let row = wid.y + wid.z * nwg.y;
  if (row >= p.rows) { return; }   // uniform per workgroup: the barriers stay uniform
  let c0 = g * p.S;
  let r = rstd[row * p.G + g];
  var dot = 0.0;
  for (var j = lid; j < p.S; j += 64u) {
    let c = c0 + j;
    dot += gout(row, c) * w[c] * yv(row, c) * silu(zv(row, c));
  }
  let total = workgroup_sum64(lid, dot);
  let k = r * r * r * total / f32(p.S);
  let nbg = (p.flags & NORM_BEFORE_GATE) != 0u;
  for (var j = lid; j < p.S; j += 64u) {
    let c = c0 + j;
    let yy = yv(row, c);
    let zz = zv(row, c);
    let go = gout(row, c);
    if (nbg) {   // out = y r w silu(z): the norm sees y, the gate multiplies after it
      dy[p.dy_off + row * p.dy_str + c] = r * go * w[c] * silu(zz) - yy * k;
      dz[p.dz_off + row * p.dz_str + c] = go * yy * r * w[c] * dsilu(zz);
    } else {
      let dv = r * go * w[c] - yy * silu(zz) * k;
      dy[p.dy_off + row * p.dy_str + c] = dv * silu(zz);
      dz[p.dz_off + row * p.dz_str + c] = dv * yy * dsilu(zz);
    }
  }
}

@compute @workgroup_size(64)
fn gated_rmsnorm_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let chunk = gid.y;
  if (c >= p.I || chunk >= p.nchunks) { return; }
  let g = c / p.S;
  var acc = 0.0;
  let r1 = min((chunk + 1u) * p.rc, p.rows);
  for (var row = chunk * p.rc; row < r1; row++) {
    acc += gout(row, c) * yv(row, c) * silu(zv(row, c)) * rstd[row * p.G + g];
  }
  if (p.nchunks == 1u) {
    if ((p.flags & ACCUMULATE) != 0u) { acc += dw[c]; }
    dw[c] = acc;
  } else {
    partial[chunk * p.I + c] = acc;
  }
}

@compute @workgroup_size(64)
fn gated_rmsnorm_backward_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.I) { return; }
  var s = 0.0;
  for (var chunk = 0u; chunk < p.nchunks; chunk++) { s += partial[chunk * p.I + c]; }
  if ((p.flags & ACCUMULATE) != 0u) { s += dw[c]; }
  dw[c] = s;
}
