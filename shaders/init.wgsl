// Reference initialisation of fresh weights, on the GPU (py_engine/train/init.py says which
// tensor gets which distribution; its pure-Python twin computes the same values on the host).
//
// Random numbers come from a counter-based generator, so any element can be drawn on its own
// and a tensor split into row pieces gets the same values as the whole tensor:
//   bits(key, c) = mix(mix(c ^ key) ^ key2),   key2 = mix(key + 0x9e3779b9)
//   mix = Chris Wellons' "lowbias32" 32-bit integer hash (a bijection)
//   u(key, c)    = (2 * (bits >> 9) + 1) / 2^24   in (0, 1), exact in f32
// The counter of element e (index into the whole HF tensor, row-major) is e for uniform
// draws and 2e, 2e + 1 for the two uniforms a normal draw (Box-Muller) uses.
//
//   uniform_forward   out = (2u - 1) * a                         U(-a, a)
//   normal_forward    out = a * sqrt(-2 ln u1) * cos(2 pi u2)    N(0, a^2) (Box-Muller)
//   s4d_alog_forward  out = log(1 + (e mod n_state))             S4D-real A_log
//   dt_bias_forward   dt = max(exp(lo + u (hi - lo)), floor);  out = dt + log(-expm1(-dt))
//                     (inverse softplus of a log-uniform dt in [dt_min, dt_max])
// Params: n = elements of this piece, base = element index of its first element in the whole
// tensor, key = the tensor's stream key, n_state = N (A_log only), a, lo, hi, floor.

struct Params { n: u32, base: u32, key: u32, n_state: u32, a: f32, lo: f32, hi: f32, floor: f32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

fn mix(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

fn unit(c: u32) -> f32 {
  let key2 = mix(p.key + 0x9e3779b9u);
  let bits = mix(mix(c ^ p.key) ^ key2);
  return f32((bits >> 9u) * 2u + 1u) * (1.0 / 16777216.0);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 256u; }

// Our own log / exp / cos, accurate to a few f32 ulps on every GPU: WGSL leaves the built-ins'
// accuracy loose (SwiftShader's log is off by ~3e-4 relative), and fresh weights should be
// the same numbers on every machine.
const LN2_HI: f32 = 0.693145751953125;       // ln 2 split so k * LN2_HI is exact for |k| < 256
const LN2_LO: f32 = 1.428606765330187e-06;

fn ln(x: f32) -> f32 {                          // x > 0, finite, normal
  let bits = bitcast<u32>(x);
  var e = i32((bits >> 23u) & 0xffu) - 127;
  var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);   // [1, 2)
  if (m > 1.4142135) { m *= 0.5; e += 1; }
  let t = (m - 1.0) / (m + 1.0);                // |t| <= 0.1716
  let t2 = t * t;
  let s = 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 +
          t2 * (1.0 / 11.0))))));
  return f32(e) * LN2_LO + s + f32(e) * LN2_HI;
}

fn expo(x: f32) -> f32 {                        // |x| < 80
  let k = round(x / 0.6931471805599453);
  let r = (x - k * LN2_HI) - k * LN2_LO;        // |r| <= 0.35
  var term = 1.0;
  var s = 1.0;
  for (var n = 1.0; n < 12.0; n += 1.0) {
    term *= r / n;
    s += term;
  }
  return ldexp(s, i32(k));
}

fn sin_q(x: f32) -> f32 {                       // |x| <= pi/4
  let x2 = x * x;
  return x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0)))));
}
fn cos_q(x: f32) -> f32 {                       // |x| <= pi/4
  let x2 = x * x;
  return 1.0 - x2 / 2.0 * (1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0))));
}
fn cos_turns(v: f32) -> f32 {                   // cos(2 pi v), |v| <= 1/2, reductions exact
  var w = abs(v);
  var sign = 1.0;
  if (w > 0.25) { w = 0.5 - w; sign = -1.0; }   // cos(2 pi w) = -cos(2 pi (1/2 - w))
  if (w > 0.125) { return sign * sin_q(6.283185307179586 * (0.25 - w)); }
  return sign * cos_q(6.283185307179586 * w);
}

@compute @workgroup_size(256)
fn uniform_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = (2.0 * unit(p.base + i) - 1.0) * p.a;
}

// -log(u) to f32 relative accuracy: near 1, where -log(u) is tiny, 1 - u is exact and
// -log(1 - d) = 2 atanh(d / (2 - d)) is an odd series.
fn neg_log(u: f32) -> f32 {
  if (u < 0.75) { return -ln(u); }
  let d = 1.0 - u;
  let t = d / (2.0 - d);
  let t2 = t * t;
  return 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 +
         t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0)))))));
}

@compute @workgroup_size(256)
fn normal_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let e = p.base + i;
  let u1 = unit(2u * e);
  let u2 = unit(2u * e + 1u);
  out[i] = p.a * sqrt(2.0 * neg_log(u1)) * cos_turns(u2 - 0.5) * -1.0;   // cos(2 pi u2)
}

@compute @workgroup_size(256)
fn s4d_alog_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = ln(f32((p.base + i) % p.n_state + 1u));
}

// -expm1(-x) = 1 - exp(-x), accurate for small x (where 1 - exp(-x) cancels).
fn one_minus_exp_neg(x: f32) -> f32 {
  if (x < 0.5) {
    // x - x^2/2 + x^3/6 - ... (11 terms: < 1e-10 relative for x < 0.5)
    var term = x;
    var s = x;
    for (var k = 2.0; k < 12.0; k += 1.0) {
      term *= -x / k;
      s += term;
    }
    return s;
  }
  return 1.0 - expo(-x);
}

@compute @workgroup_size(256)
fn dt_bias_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n) { return; }
  let u = unit(p.base + i);
  let dt = max(expo(p.lo + u * (p.hi - p.lo)), p.floor);
  if (dt > 20.0) { out[i] = dt; return; }   // softplus is the identity there
  out[i] = dt + ln(one_minus_exp_neg(dt));
}
