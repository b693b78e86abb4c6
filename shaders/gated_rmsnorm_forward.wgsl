// Gated, grouped RMSNorm of Mamba-2 (transformers' MambaRMSNormGated, norm_before_gate=False),
// forward. Over M rows of I channels split into G groups of S = I/G consecutive channels:
//   v[c]       = y[c] * silu(z[c])
//   rstd[r, g] = 1 / sqrt(mean_{c in g} v[c]^2 + eps)
//   out[c]     = v[c] * rstd[r, g(c)] * w[c]
//
// Layout: y, z and out are column windows of row-major matrices ("views", as in conv1d.wgsl):
// element (r, c) sits at off + r*stride + c, so z is read straight out of in_proj's
// [z | x | B | C | dt] output. w [I]; rstd [M, G] (saved for the backward pass).
//
// flags & 1 (NORM_BEFORE_GATE, Mamba-3's is_outproj_norm): the norm reads y itself and the gate
// multiplies after it:  rstd from y;  out[c] = y[c] * rstd * w[c] * silu(z[c]).
//
// Dispatch: gated_rmsnorm_forward, one 64-thread workgroup per (group, row): grid
// (G, rows folded into y/z). Each thread strides over the group's channels, then one 64-wide
// shared-memory tree sums the squares (the same shape as rmsnorm.wgsl, which SwiftShader runs
// fast enough; see DESIGN.md on barrier trees). Deterministic: fixed summation order.

struct Params {
  rows: u32, I: u32, S: u32, G: u32,               // M, channels, group size, groups
  eps: f32, flags: u32, _p0: u32, _p1: u32,
  y_off: u32, y_str: u32, z_off: u32, z_str: u32,  // y view; z view
  o_off: u32, o_str: u32, _p2: u32, _p3: u32,      // out view
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;           // [M, I] view
@group(0) @binding(2) var<storage, read> z: array<f32>;           // [M, I] view (the gate)
@group(0) @binding(3) var<storage, read> w: array<f32>;           // [I]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // [M, I] view
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;  // [M, G]

//#include "lib/activations.wgsl"
//#include "lib/reduce.wgsl"

fn gated(row: u32, c: u32) -> f32 {
  return y[p.y_off + row * p.y_str + c] * silu(z[p.z_off + row * p.z_str + c]);
}

// what the norm is taken of: y * silu(z), or y alone (NORM_BEFORE_GATE)
fn normed(row: u32, c: u32) -> f32 {
  if ((p.flags & 1u) != 0u) { return y[p.y_off + row * p.y_str + c]; }
  return gated(row, c);
}

@compute @workgroup_size(64)
fn gated_rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let g = wid.x;
  let row = wid.y + wid.z * nwg.y;
  if (row >= p.rows) { return; }   // uniform per workgroup: the barriers stay uniform
  let c0 = g * p.S;
  var ss = 0.0;
  for (var j = lid; j < p.S; j += 64u) { let v = normed(row, c0 + j); ss += v * v; }
  let total = workgroup_sum64(lid, ss);
  let r = inverseSqrt(total / f32(p.S) + p.eps);
  for (var j = lid; j < p.S; j += 64u) {
    let c = c0 + j;
    var o = normed(row, c) * r * w[c];
    if ((p.flags & 1u) != 0u) { o = o * silu(z[p.z_off + row * p.z_str + c]); }
    out[p.o_off + row * p.o_str + c] = o;
  }
  if (lid == 0u) { rstd[row * p.G + g] = r; }
}
