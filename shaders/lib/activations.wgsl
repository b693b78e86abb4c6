// Scalar activations shared by the kernels (include with //#include "lib/activations.wgsl").
//   sigmoid(x)  = 1 / (1 + exp(-x)), stable in both tails (exp of a non-positive number only)
//   silu(x)     = x * sigmoid(x);   dsilu(x) = d silu / dx = s (1 + x (1 - s)),  s = sigmoid(x)
//   softplus(x) = x > 20 ? x : log1p(exp(x))   (PyTorch's threshold-20 form), computed as
//                 max(x, 0) + log1p(exp(-|x|)) with log1p_unit below

fn sigmoid(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}

fn silu(x: f32) -> f32 { return x * sigmoid(x); }

fn dsilu(x: f32) -> f32 {
  let s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

// log(1 + e) for 0 <= e <= 1, accurate to f32 rounding: 2*atanh(t) with t = e / (2 + e)
// <= 1/3, as an odd series (8 terms leave < 1e-9 relative). A plain log(1.0 + e) loses all
// relative precision for small e, and WGSL's log only promises 2^-21 absolute near 1.
fn log1p_unit(e: f32) -> f32 {
  let t = e / (2.0 + e);
  let t2 = t * t;
  let s = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 +
          t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0 + t2 * (1.0 / 15.0)))))));
  return 2.0 * t * s;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)), and exactly x above PyTorch's threshold 20.
fn softplus(x: f32) -> f32 {
  if (x > 20.0) { return x; }
  return max(x, 0.0) + log1p_unit(exp(-abs(x)));
}
