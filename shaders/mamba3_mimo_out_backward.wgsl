// Mamba-3 MIMO output, backward (py_engine/ops/mamba3_mimo.py mamba3_mimo_out_backward); the forward is
// shaders/mamba3_mimo_out.wgsl. Per (row, h), channel p, rank r (zr = z mimo_z[h, r, p]):
//   yn_r  = y_r                                  (plain)   or  y_r rs_r w[h, p]   (ONORM: rs_r = rsqrt(mean_P y_r^2 + eps))
//   out   = sum_r mimo_o[h, r, p] yn_r silu(zr)
// With e_r = dout mimo_o[h, r, p] (the gradient of the r-th gated term):
//   dyn_r = e_r silu(zr);   dz = sum_r e_r yn_r silu'(zr) mimo_z[h, r, p]
//   dy_r  = dyn_r                                 (plain)
//   dy_r  = rs_r w dyn_r - y_r rs_r^3 sum_P(w dyn_r y_r) / P          (ONORM)
//   dmimo_o[h, r, p] = sum_rows dout yn_r silu(zr);  dmimo_z[h, r, p] = sum_rows e_r yn_r silu'(zr) z
//   dnorm_w[h, p]    = sum_rows sum_r dyn_r y_r rs_r                  (ONORM)
// Two dispatches:
//   mamba3_mimo_out_bwd_rows  one thread per (row, h) (grid folded): rs_r into rs [rows, H, R], the
//                             row's dot products, then dy_r and dz (fixed-order loops over p, r)
//   mamba3_mimo_out_bwd_par   one thread per parameter element [dmimo_z (HRP) | dmimo_o (HRP) | dnorm_w
//                             (HP)]: sums over rows in order (rs from the first pass). No atomics.
//                             Row windows: one dispatch sums rows [r0, r1); the first (r0 == 0) writes,
//                             later ones add -- the host splits a long `rows` so no thread passes
//                             lavapipe's loop cap (py_engine/ops/loop_budget.py).
// y [rows, R*H*P] rank-major per row (the scan's output); z, dout, dz views H*P wide (element (row, c) at
// off + row*str + c); par = mimo_z | mimo_o | norm_w packed by the host ([H, R, P], [H, R, P], [H*P]).

const WG = 64u;
const ONORM = 1u;
const MAX_R = 8u;

struct Params {
  rows: u32, H: u32, P: u32, R: u32,
  flags: u32, eps: f32, z_off: u32, z_str: u32,
  g_off: u32, g_str: u32, dz_off: u32, dz_str: u32,
  r0: u32, r1: u32, _p0: u32, _p1: u32,     // par: this dispatch's row window [r0, r1)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;              // [rows, R*H*P]
@group(0) @binding(2) var<storage, read> z: array<f32>;              // [rows, *] view, H*P wide
@group(0) @binding(3) var<storage, read> par: array<f32>;            // mimo_z | mimo_o | norm_w
@group(0) @binding(4) var<storage, read> dout: array<f32>;           // [rows, *] view, H*P wide
@group(0) @binding(5) var<storage, read_write> rs: array<f32>;       // [rows, H, R]
// rows
@group(0) @binding(6) var<storage, read_write> dy: array<f32>;       // [rows, R*H*P]
@group(0) @binding(7) var<storage, read_write> dz: array<f32>;       // [rows, *] view, H*P wide
// par
@group(0) @binding(8) var<storage, read_write> g_mz: array<f32>;     // [H, R, P]
@group(0) @binding(9) var<storage, read_write> g_mo: array<f32>;     // [H, R, P]
@group(0) @binding(10) var<storage, read_write> g_nw: array<f32>;    // [H*P] (a dummy without ONORM)

//#include "lib/activations.wgsl"

fn onorm() -> bool { return (p.flags & ONORM) != 0u; }
fn mz(h: u32, r: u32, pp: u32) -> f32 { return par[(h * p.R + r) * p.P + pp]; }
fn mo(h: u32, r: u32, pp: u32) -> f32 { return par[p.H * p.R * p.P + (h * p.R + r) * p.P + pp]; }
fn nw(h: u32, pp: u32) -> f32 {
  if (!onorm()) { return 1.0; }
  return par[2u * p.H * p.R * p.P + h * p.P + pp];
}
fn yi(row: u32, r: u32, h: u32, pp: u32) -> u32 { return ((row * p.R + r) * p.H + h) * p.P + pp; }
fn zv(row: u32, h: u32, pp: u32) -> f32 { return z[p.z_off + row * p.z_str + h * p.P + pp]; }
fn gv(row: u32, h: u32, pp: u32) -> f32 { return dout[p.g_off + row * p.g_str + h * p.P + pp]; }

@compute @workgroup_size(WG)
fn mamba3_mimo_out_bwd_rows(@builtin(global_invocation_id) gid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * WG;
  if (k >= p.rows * p.H) { return; }
  let row = k / p.H;
  let h = k % p.H;
  let P = p.P;
  var rr: array<f32, MAX_R>;    // rs_r
  var dot: array<f32, MAX_R>;   // sum_P w dyn_r y_r
  for (var r = 0u; r < p.R; r++) {
    rr[r] = 1.0;
    dot[r] = 0.0;
    if (onorm()) {
      var ss = 0.0;
      for (var pp = 0u; pp < P; pp++) { let v = y[yi(row, r, h, pp)]; ss += v * v; }
      rr[r] = inverseSqrt(ss / f32(P) + p.eps);
      for (var pp = 0u; pp < P; pp++) {
        let e = gv(row, h, pp) * mo(h, r, pp);
        dot[r] += nw(h, pp) * e * silu(zv(row, h, pp) * mz(h, r, pp)) * y[yi(row, r, h, pp)];
      }
    }
    rs[(row * p.H + h) * p.R + r] = rr[r];
  }
  for (var pp = 0u; pp < P; pp++) {
    let zz = zv(row, h, pp);
    let go = gv(row, h, pp);
    let w = nw(h, pp);
    var dzz = 0.0;
    for (var r = 0u; r < p.R; r++) {
      let m = mz(h, r, pp);
      let zr = zz * m;
      let e = go * mo(h, r, pp);
      let yy = y[yi(row, r, h, pp)];
      let yn = yy * rr[r] * w;
      dzz += e * yn * dsilu(zr) * m;
      let dyn = e * silu(zr);
      var d = dyn;
      if (onorm()) { d = rr[r] * w * dyn - yy * rr[r] * rr[r] * rr[r] * dot[r] / f32(P); }
      dy[yi(row, r, h, pp)] = d;
    }
    dz[p.dz_off + row * p.dz_str + h * P + pp] = dzz;
  }
}

@compute @workgroup_size(WG)
fn mamba3_mimo_out_bwd_par(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * WG;
  let HRP = p.H * p.R * p.P;
  let HP = p.H * p.P;
  var n = 2u * HRP;
  if (onorm()) { n += HP; }
  if (e >= n) { return; }
  if (e < 2u * HRP) {        // dmimo_z, dmimo_o of (h, r, pp)
    let j = e % HRP;
    let h = j / (p.R * p.P);
    let r = (j / p.P) % p.R;
    let pp = j % p.P;
    let m = mz(h, r, pp);
    let w = nw(h, pp);
    var acc = 0.0;
    for (var row = p.r0; row < p.r1; row++) {
      let zz = zv(row, h, pp);
      let yn = y[yi(row, r, h, pp)] * rs[(row * p.H + h) * p.R + r] * w;
      if (e < HRP) {
        acc += gv(row, h, pp) * mo(h, r, pp) * yn * dsilu(zz * m) * zz;
      } else {
        acc += gv(row, h, pp) * yn * silu(zz * m);
      }
    }
    if (e < HRP) {
      if (p.r0 == 0u) { g_mz[j] = acc; } else { g_mz[j] += acc; }
    } else {
      if (p.r0 == 0u) { g_mo[j] = acc; } else { g_mo[j] += acc; }
    }
    return;
  }
  let j = e - 2u * HRP;      // dnorm_w of (h, pp)
  let h = j / p.P;
  let pp = j % p.P;
  var acc = 0.0;
  for (var row = p.r0; row < p.r1; row++) {
    let zz = zv(row, h, pp);
    let go = gv(row, h, pp);
    for (var r = 0u; r < p.R; r++) {
      acc += go * mo(h, r, pp) * silu(zz * mz(h, r, pp)) * y[yi(row, r, h, pp)]
             * rs[(row * p.H + h) * p.R + r];
    }
  }
  if (p.r0 == 0u) { g_nw[j] = acc; } else { g_nw[j] += acc; }
}
