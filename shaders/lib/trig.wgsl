// Accurate f32 trigonometry for kernels whose angles multiply into many values (RoPE, Mamba-3's
// rotation): WGSL's own sin/cos/tanh are only promised to 2^-11 and differ between GPUs
// (SwiftShader's gave 4e-4 errors in Mamba-3 outputs). Include with //#include "lib/trig.wgsl".
//
// cos_sin(a), a >= 0: Cody-Waite reduction by pi/2 in five parts whose products with k (< 2^17)
// are exact in f32 -- so FMA contraction cannot change them -- then cephes' f32 minimax
// polynomials on [-pi/4, pi/4]; |error| <= 8e-8 vs float64 for every angle < 205000 rad
// (tests/browser/test_kernels_rope.py models these exact operations in f32).
// tanh_exact(x): from exp of a non-positive number, no overflow, ~1e-7 absolute.

const TWO_OVER_PI = 0.636619772367581343;
// pi/2 = P0 + P1 + P2 + P3 + P4; P0..P3 have <= 7 significant bits (k * Pj exact for k < 2^17)
const P0 = 1.5625;
const P1 = 0.0081787109375;
const P2 = 0.00011730194091796875;
const P3 = 3.129243850708008e-07;
const P4 = 9.92093629470503e-10;

// (cos a, sin a) for a >= 0 in f32, see the header.
fn cos_sin(a: f32) -> vec2<f32> {
  let k = floor(a * TWO_OVER_PI + 0.5);
  var r = a - k * P0;
  r = r - k * P1;
  r = r - k * P2;
  r = r - (k * P3 + k * P4);
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
          - 0.5 * z + 1.0;
  switch (u32(k) & 3u) {
    case 0u: { return vec2<f32>(c, s); }
    case 1u: { return vec2<f32>(-s, c); }
    case 2u: { return vec2<f32>(-c, -s); }
    default: { return vec2<f32>(s, -c); }
  }
}

fn tanh_exact(x: f32) -> f32 {
  let e = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - e) / (1.0 + e);
}
