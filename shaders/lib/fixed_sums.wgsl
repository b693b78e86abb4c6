// Sums that come out the same in any order: values added across workgroups of one dispatch
// through integer atomics, read back by the next dispatch. WGSL has no float atomics, and a
// sum of floats depends on its order; a sum of integers does not. A value v, |v| < 2^31, is
// taken as the integer X = floor(|v| * 2^48) (exact for every bit of v at or above 2^-48:
// truncation drops only what lies below), cut into FX_DIGITS = 5 digits of 16 bits, digit k
// = bits 16k .. 16k + 15 of X; each digit is added, with v's sign, to its own i32 word
// (FX_WORDS = 6 words a sum: the 5 digit words and a flag word). A word takes up to 2^15
// additions before it could overflow; the callers add a few hundred. A value that is not
// finite or not below 2^31 sets the flag word instead, and the sum reads back as NaN.
//
// Used by Mamba-1's decode in_proj with x_proj's shares folded in (lib/matvec_xproj.wgsl adds,
// lib/scan_step_xproj_sums.wgsl reads).
const FX_DIGITS: u32 = 5u;
const FX_WORDS: u32 = 6u;                 // the digits, then the flag word
const FX_LIMIT: f32 = 2147483648.0;       // 2^31: |v| below it fits 80 bits at 2^-48

// Digit k (0 = lowest) of |v|, as a float in [0, 2^16): from the top down, each step exact
// (the remainder r - d keeps bits r already had; scaling by 2^16 is exact).
fn fx_digits(a: f32) -> array<f32, 5> {
  var out: array<f32, 5>;
  var r = a * (1.0 / 65536.0);            // X / 2^64: its integer part is digit 4
  for (var k = 0u; k < FX_DIGITS; k++) {
    let d = floor(r);
    out[FX_DIGITS - 1u - k] = d;
    r = (r - d) * 65536.0;
  }
  return out;
}

// The sum held in words w (FX_WORDS of them, as read back) as a float: carries propagated
// (each digit in [0, 2^16), the sign in what is carried out of the top), a negative sum's
// words negated and propagated again, then the top 32 bits below the leading one converted
// (within one f32 rounding of the exact sum) and scaled by their place.
fn fx_value(w: array<i32, 6>) -> f32 {
  if (w[FX_DIGITS] != 0) { return bitcast<f32>(0x7fc00000u); }   // a flagged value: NaN
  var neg = false;
  var d: array<i32, 5>;
  var c = 0;
  for (var k = 0u; k < FX_DIGITS; k++) {
    let t = w[k] + c;
    d[k] = t & 0xffff;
    c = t >> 16u;                         // arithmetic shift: floor(t / 2^16)
  }
  if (c < 0) {                            // negative: the magnitude's digits from -w
    neg = true;
    c = 0;
    for (var k = 0u; k < FX_DIGITS; k++) {
      let t = -w[k] + c;
      d[k] = t & 0xffff;
      c = t >> 16u;
    }
  }
  if (c != 0) { return bitcast<f32>(0x7fc00000u); }   // past 2^80: cannot happen unflagged
  var top = -1;
  for (var k = 0; k < i32(FX_DIGITS); k++) { if (d[k] != 0) { top = k; } }
  if (top < 0) { return 0.0; }
  let d0 = u32(d[top]);
  var d1 = 0u;
  var d2 = 0u;
  if (top >= 1) { d1 = u32(d[top - 1]); }
  if (top >= 2) { d2 = u32(d[top - 2]); }
  let lz = countLeadingZeros(d0) - 16u;   // 0 .. 15: the leading one to bit 31
  var hi = (d0 << (16u + lz)) | (d1 << lz);
  if (lz > 0u) { hi |= d2 >> (16u - lz); }
  let v = ldexp(f32(hi), 16 * top - 16 - i32(lz) - 48);
  return select(v, -v, neg);
}
