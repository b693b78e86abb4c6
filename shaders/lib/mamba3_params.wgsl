// Mamba-3's kernel parameters, constants and the k/q rotation, shared by mamba3_forward.wgsl
// (prep and the scans) and lib/mamba3_step_common.wgsl (the decode steps): one Params layout,
// filled by py_engine/ops/mamba3.py's _uniform_fn. The includer declares `p: Params`.

const MIMO = 4u;           // rank-R MIMO (v_r = x * mimo_x, half-split rotation pairs)
const MAX_R = 8u;
const WG = 64u;
const TWO_PI = 6.28318530717959;

override WS: u32 = 416u;   // floats of workgroup memory: 3 N + S (host-set)

struct Params {
  T: u32, H: u32, P: u32, N: u32,
  G: u32, S: u32, nb: u32, flags: u32,
  a_floor: f32, pw: u32, par: u32, total: u32,        // pw = 4H + S; par = offset of the params;
                                                      // total = prep's elements (pre up to mimo_x)
  x_off: u32, x_str: u32, b_off: u32, b_str: u32,     // x, Bn views
  c_off: u32, c_str: u32, y_off: u32, y_str: u32,     // Cn, y views
  dt_off: u32, dt_str: u32, da_off: u32, da_str: u32, // dd_dt, dd_A views
  tr_off: u32, tr_str: u32, an_off: u32, an_str: u32, // trap, angles views
  R: u32, pre_len: u32, t0: u32, tn: u32,              // MIMO rank (1: SISO), pre's full length;
                                                      // the scans' token window [t0, t0 + tn)
};

// cos_sin / tanh_exact: accurate f32 trigonometry shared with RoPE
//#include "lib/trig.wgsl"

// (sin a, cos a) of an angle kept in [0, 2 pi)
fn sin_cos(a: f32) -> vec2<f32> { return cos_sin(a).yx; }

fn has(f: u32) -> bool { return (p.flags & f) != 0u; }

// An angle brought back into [0, 2 pi) (the phi state is kept there between tokens)
fn wrap_angle(a: f32) -> f32 { return a - TWO_PI * floor(a / TWO_PI); }

// Element e = r N + n of head h's rotated-k state of sequence b, k [Bsz, R, H, N]
fn k_index(b: u32, h: u32, e: u32) -> u32 { return ((b * p.R + e / p.N) * p.H + h) * p.N + e % p.N; }

// Dim n's rotation of a k or q row of N dims: its partner m and angle i, whether n is the pair's
// first element (out = a c - b s, else a s + b c) and whether n is rotated at all -- pairs
// (2i, 2i+1) (SISO) or (i, i + N/2) (MIMO), i < S.
struct Pair { m: u32, i: u32, first: bool, rot: bool };

fn pair_of(n: u32, N: u32) -> Pair {
  var q = Pair(n, 0u, false, false);
  if (has(MIMO)) {
    let hN = N / 2u;
    if (n < p.S) { q = Pair(n + hN, n, true, true); }
    else if (n >= hN && n < hN + p.S) { q = Pair(n - hN, n - hN, false, true); }
  } else if (n < 2u * p.S) {
    q = Pair(n ^ 1u, n / 2u, (n & 1u) == 0u, true);
  }
  return q;
}

// (k, q) of a rotated dim from its own (kb, qb) and its partner's (kp, qp), sc = (sin, cos).
fn rotated(kb: f32, qb: f32, kp: f32, qp: f32, sc: vec2<f32>, first: bool) -> vec2<f32> {
  let s = sc.x;
  let c = sc.y;
  if (first) { return vec2<f32>(kb * c - kp * s, qb * c - qp * s); }
  return vec2<f32>(kp * s + kb * c, qp * s + qb * c);
}
