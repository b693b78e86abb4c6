// What Mamba-3's chunks-side-by-side kernels share (mamba3_chunked.wgsl: the angle walk, the
// carry and the kernels of a thread per (state row, class of dims); mamba3_chunk_tiles.wgsl: the
// register-tiled delta and out kernels): the bindings, the token window and the chunk a
// workgroup owns, and where the chunk states, decays and the k / v states lie. The includer
// first defines HAS_INIT and includes lib/mamba3_params.wgsl.
//
// Bindings (views as in mamba3_forward.wgsl): pre [Bsz*T, 4H+S] | params; x, Bn, Cn, y views;
// phi [Bsz, tn, H*S] (the window's tokens); chunks [Bsz, H, C, P, N] (D_c, then S_c) |
// cl [Bsz, H, C] (C = the window's chunks); scratch kinit [Bsz, R, H, N] | vinit [Bsz, H, P] |
// kfin [Bsz, R, H, N]; the angle state [Bsz, H, S] and the ssm state [Bsz, H, P, N], in place.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> Bn: array<f32>;
@group(0) @binding(4) var<storage, read> Cn: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> phi: array<f32>;
@group(0) @binding(7) var<storage, read_write> chunks: array<f32>;
@group(0) @binding(8) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(9) var<storage, read_write> s_ang: array<f32>;
@group(0) @binding(10) var<storage, read_write> s_ssm: array<f32>;

var<workgroup> sh: array<f32, WS>;

// Threads of the delta and out kernels' workgroups
const CWG = 256u;

//#include "lib/mamba3_chunk_common.wgsl"

struct Window { c_first: u32, chunks: u32, t_end: u32, carried: bool };

// The row of phi holding token t of sequence b (t in the window: phi holds its tokens only)
fn phi_row(b: u32, t: u32) -> u32 { return b * p.tn + t - p.t0; }

fn window() -> Window {
  var w: Window;
  w.c_first = p.t0 / CHUNK;
  w.t_end = min(p.T, p.t0 + p.tn);
  w.chunks = (w.t_end - p.t0 + CHUNK - 1u) / CHUNK;
  w.carried = has(HAS_INIT) || p.t0 > 0u;     // the states hold token t0 - 1's values
  return w;
}

// Whether workgroup wid of the delta and out kernels' grid (H, Bsz, chunks) owns a chunk of the
// window (uniform: the workgroup's id and p only)
fn owns_chunk(wid: vec3<u32>) -> bool {
  return wid.x < p.H && wid.y < p.nb && wid.z < window().chunks;
}

// The chunk a workgroup of the delta and out kernels owns (grid (H, Bsz, chunks)); uniform per
// workgroup. r0: its first token's row; c0: (DT - gamma) of that token (the weight of
// v_prev k_prev^T)
struct Chunk { h: u32, b: u32, g: u32, c: u32, cw: u32, t0: u32, Lc: u32, r0: u32, c0: f32 };

fn chunk_at(wid: vec3<u32>, w: Window) -> Chunk {
  var k: Chunk;
  k.h = wid.x;
  k.b = wid.y;
  k.g = k.h / (p.H / p.G);
  k.cw = wid.z;
  k.c = w.c_first + k.cw;
  k.t0 = k.c * CHUNK;
  k.Lc = min(CHUNK, p.T - k.t0);
  k.r0 = k.b * p.T + k.t0;
  k.c0 = dt_less_gamma(k.r0, k.h);
  return k;
}

// phi of the chunk's tokens into sh[ph ..] ([Lc, S]) and of its previous token into sh[pp ..]
// (not for the window's first chunk); the caller puts a barrier after.
fn load_phi(k: Chunk, lid: u32, ph: u32, pp: u32) {
  let S = p.S;
  for (var e = lid; e < k.Lc * S; e += CWG) {
    sh[ph + e] = phi[phi_row(k.b, k.t0 + e / S) * p.H * S + k.h * S + e % S];
  }
  if (k.cw > 0u) {
    for (var i = lid; i < S; i += CWG) {
      sh[pp + i] = phi[phi_row(k.b, k.t0 - 1u) * p.H * S + k.h * S + i];
    }
  }
}

// k_prev [R, N] into sh[kp ..]: the previous token's rotated k (its phi at sh[pp ..], after a
// barrier), or the k state (copied to scratch) before the window's first chunk, or 0.
fn load_k_prev(k: Chunk, lid: u32, w: Window, pp: u32, kp: u32) {
  let N = p.N;
  for (var e = lid; e < RANK * N; e += CWG) {
    var v = 0.0;
    if (k.cw > 0u) {
      v = kq_rotated(k.r0 - 1u, k.h, k.g, e / N, e % N, pp).x;
    } else if (w.carried) {
      v = scratch[k_index(k.b, k.h, e)];          // kinit
    }
    sh[kp + e] = v;
  }
}

// v_prev of state row pp of the chunk: the previous token's x, or the v state (copied to
// scratch) before the sequence's first chunk, or 0 for a fresh sequence.
fn v_prev(k: Chunk, pp: u32) -> f32 {
  if (k.c > 0u) { return x[p.x_off + (k.b * p.T + k.t0 - 1u) * p.x_str + k.h * p.P + pp]; }
  if (has(HAS_INIT)) { return scratch[VINIT() + (k.b * p.H + k.h) * p.P + pp]; }
  return 0.0;
}

// scratch: kinit [Bsz, R, H, N] at 0 | vinit [Bsz, H, P] at VINIT | kfin [Bsz, R, H, N] at KFIN
fn VINIT() -> u32 { return p.nb * RANK * p.H * p.N; }
fn KFIN() -> u32 { return VINIT() + p.nb * p.H * p.P; }

fn chunk_base(k: Chunk, w: Window) -> u32 {         // D_c / S_c of (b, h, c) in chunks
  return ((k.b * p.H + k.h) * w.chunks + k.cw) * p.P * p.N;
}

fn cl_index(bh: u32, cw: u32, w: Window) -> u32 {   // cl_c of (b, h, c) in chunks
  return p.nb * p.H * w.chunks * p.P * p.N + bh * w.chunks + cw;
}
