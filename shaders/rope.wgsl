// Rotary position embedding (RoPE) of q or k as projected, Llama's non-interleaved convention
// (transformers' rotate_half / apply_rotary_pos_emb; the partial form of Bamba, GLM, NeoX):
//
//   per head, channels d < R rotate (R = rot, even), d >= R pass through unchanged:
//   i = d mod R/2,  a = f32(position) * inv[i]       (inv[i] = theta^(-2i/R) as f32, host-made)
//   y[d]       = x[d] cos a - x[d + R/2] sin a        d <  R/2
//   y[d]       = x[d] cos a + x[d - R/2] sin a        R/2 <= d < R
//   position of row r = b*T + t:  start + t, plus pos[b] when flags & USE_POS (decode: the GPU-side
//   position buffer, so a recorded step replays without host writes).
//
// Backward: this same entry with flags & INVERSE, which negates the angle (sin -> -sin). The
// rotation is orthogonal, so dL/dx = R(a)^T dL/dy = R(-a) dL/dy: no separate kernel.
//
// Angles match torch's f32 path bit for bit (inv in f32 from the host, a = f32(position) * inv
// rounded to f32 once); cos/sin are computed here, not with WGSL's cos/sin (whose accuracy the
// spec leaves at 2^-11 and which differ between GPUs): Cody-Waite reduction by pi/2 in five
// parts whose products with k (< 2^17) are exact in f32 -- so FMA contraction cannot change them
// -- then cephes' f32 minimax polynomials on [-pi/4, pi/4]. Measured by an f32 model of these
// exact operations (tests/browser/test_kernels_rope.py): |error| <= 8e-8 vs float64 cos/sin for
// every angle < 205000 rad (numpy's f32 cos: 7e-8); beyond 2^17 pi/2 the reduction degrades.
//
// Layout: x [rows, *] view, H*Dh wide (element (r, j) at x_off + r*x_str + j; head h = columns
// h*Dh .. h*Dh+Dh-1); y the same for the output (a different buffer); pos [Bsz] u32.
// Dispatch: 1, ceil(rows*H*Dh / 256) workgroups of 256 (folded into y past 65535); one thread
// per output element, each computing its own angle: no workgroup memory, no reductions.

const INVERSE = 1u;
const USE_POS = 2u;

struct Params {
  rows: u32, width: u32, Dh: u32, rot: u32,        // rows = Bsz*T, width = H*Dh, rot = R
  T: u32, start: u32, flags: u32, x_off: u32,
  x_str: u32, y_off: u32, y_str: u32, _p0: u32,
  inv: array<vec4<f32>, 32>,                        // inv_freq[i] = inv[i / 4][i % 4], i < R/2
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [rows, *] view, H*Dh wide
@group(0) @binding(2) var<storage, read> pos: array<u32>;       // [Bsz] tokens seen (USE_POS)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // [rows, *] view, H*Dh wide

// cos_sin: shaders/lib/trig.wgsl (accurate f32 cos/sin, see the header)
//#include "lib/trig.wgsl"

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * 256u;
  if (e >= p.rows * p.width) { return; }
  let r = e / p.width;
  let j = e % p.width;
  let d = j % p.Dh;
  let xi = p.x_off + r * p.x_str + j;
  let yi = p.y_off + r * p.y_str + j;
  if (d >= p.rot) {
    y[yi] = x[xi];
    return;
  }
  let half = p.rot / 2u;
  let i = d % half;
  let b = r / p.T;
  var n = p.start + r % p.T;
  if ((p.flags & USE_POS) != 0u) { n += pos[b]; }
  let a = f32(n) * p.inv[i / 4u][i % 4u];
  let cs = cos_sin(a);
  var s = cs.y;
  if ((p.flags & INVERSE) != 0u) { s = -s; }
  if (d < half) {
    y[yi] = x[xi] * cs.x + (-x[xi + half]) * s;
  } else {
    y[yi] = x[xi] * cs.x + x[xi - half] * s;
  }
}
