// Mamba-3 MIMO output (py_engine/ops/mamba3_mimo.py): each rank's gate, then the mimo_o contraction.
//   zr_r  = z * mimo_z[h, r]                                      [P] per (row, h, r)
//   g_r   = y_r * silu(zr_r)                                      (plain gate)
//   g_r   = y_r rsqrt(mean_P(y_r^2) + eps) * norm_w[h] * silu(zr_r)  (ONORM: the fused head-wise norm)
//   out   = sum_r g_r * mimo_o[h, r]                              [row, H*P]
// One thread per (row, h), grid folded; fixed-order loops (over r for the norms, then over p, r).
// y [rows, R*H*P] (rank-major per row, from mamba3_forward / mamba3_step), z a view H*P wide,
// mimo_z / mimo_o [H, R, P], norm_w [H*P] (bound to a dummy without ONORM), out [rows, H*P] view.

const WG = 64u;
const ONORM = 1u;
const MAX_R = 8u;

struct Params {
  rows: u32, H: u32, P: u32, R: u32,
  flags: u32, eps: f32, z_off: u32, z_str: u32,
  o_off: u32, o_str: u32, _p0: u32, _p1: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> mimo_z: array<f32>;
@group(0) @binding(4) var<storage, read> mimo_o: array<f32>;
@group(0) @binding(5) var<storage, read> norm_w: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

//#include "lib/activations.wgsl"

@compute @workgroup_size(WG)
fn mamba3_mimo_out(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = gid.x + gid.y * nwg.x * WG;
  if (k >= p.rows * p.H) { return; }
  let row = k / p.H;
  let h = k % p.H;
  let P = p.P;
  let HP = p.H * P;
  let onorm = (p.flags & ONORM) != 0u;
  var rs: array<f32, MAX_R>;
  for (var r = 0u; r < p.R; r++) {
    rs[r] = 1.0;
    if (onorm) {
      let yo = row * p.R * HP + r * HP + h * P;
      var ss = 0.0;
      for (var pp = 0u; pp < P; pp++) { let v = y[yo + pp]; ss += v * v; }
      rs[r] = inverseSqrt(ss / f32(P) + p.eps);
    }
  }
  for (var pp = 0u; pp < P; pp++) {
    let zv = z[p.z_off + row * p.z_str + h * P + pp];
    var w = 1.0;
    if (onorm) { w = norm_w[h * P + pp]; }
    var acc = 0.0;
    for (var r = 0u; r < p.R; r++) {
      let wi = (h * p.R + r) * P + pp;
      let g = y[row * p.R * HP + r * HP + h * P + pp] * rs[r] * w * silu(zv * mimo_z[wi]);
      acc += g * mimo_o[wi];
    }
    out[p.o_off + row * p.o_str + h * P + pp] = acc;
  }
}
