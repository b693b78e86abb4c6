// Causal grouped-query attention backward (training: no cache, start = 0), recomputing the
// softmax from the forward's row logsumexp instead of storing a T x T matrix (FlashAttention-2).
//
//   P[t, s] = exp(scale q_t . k_s - lse_t)   (s <= t)      D_t = do_t . o_t
//   dS      = P (do_t . v_s - D_t)
//   dq_t    = scale sum_{s <= t} dS[t, s] k_s
//   dk_s    = scale sum_{h in group} sum_{t >= s} dS[t, s] q_t      (g = h / (H / KVH))
//   dv_s    =       sum_{h in group} sum_{t >= s} P[t, s] do_t
//
// Layout: token rows r = b*T + t; q, o, do, dq views [Bsz*T, *] H*Dh wide, k, v, dk, dv views
// KVH*Dh wide (element (r, j) at off + r*str + j; head h = columns h*Dh .. h*Dh+Dh-1);
// lse and delta (= D) [Bsz, H, T] contiguous. dk and dv may be windows of one buffer (SHARED:
// one binding spanning both, dv written through it at its own element offset).
//
// Dispatches (2):
//   attention_backward_dq   grid (ceil(T / WG), H, Bsz): one thread per query row (b, h, t);
//       writes D_t, then walks keys 0 .. t in tiles of BT staged in workgroup memory (K | V),
//       accumulating dq in registers.
//   attention_backward_dkv  grid (ceil(T / WG), KVH, Bsz): one thread per key row (b, g, s);
//       for each query head of the group in order, walks queries s .. T-1 in tiles of BT staged
//       in workgroup memory (Q | dO | lse | D), accumulating dk and dv in registers.
// Windows (the loop-pass budget, py_engine/ops/loop_budget.py: lavapipe cuts an invocation's
// loops short after 65535 passes, silently): a long sequence runs each kernel once per window
// [w0, w1) of the axis its threads walk, in order -- dq over key slots, dk/dv over query rows;
// a row's first window writes its gradient, later ones add to it (one window: w0 = 0, w1 = all).
// Every gradient element is owned by one thread and summed in a fixed order (heads ascending,
// then tokens ascending): deterministic, no atomics. Workgroup memory WS = 2 BT (Dh + 1) floats,
// BT sized by the host from maxComputeWorkgroupStorageSize; barriers only between tiles.

const WG = 64u;
const SHARED = 1u;   // dk and dv are one buffer: both written through the dk binding
const MAXD = 256u;

override WS: u32 = 4096u;   // floats: 2 * BT * (Dh + 1) (host-sized)

struct Params {
  T: u32, H: u32, KVH: u32, Dh: u32,
  nb: u32, BT: u32, scale: f32, flags: u32,
  q_off: u32, q_str: u32, k_off: u32, k_str: u32,
  v_off: u32, v_str: u32, o_off: u32, o_str: u32,
  do_off: u32, do_str: u32, dq_off: u32, dq_str: u32,
  dk_off: u32, dk_str: u32, dv_off: u32, dv_str: u32,
  w0: u32, w1: u32, _p0: u32, _p1: u32,   // this dispatch's window: keys (dq) or queries (dk/dv)
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;             // [Bsz*T, *] view, H*Dh
@group(0) @binding(2) var<storage, read> k: array<f32>;             // [Bsz*T, *] view, KVH*Dh
@group(0) @binding(3) var<storage, read> v: array<f32>;             // [Bsz*T, *] view, KVH*Dh
@group(0) @binding(4) var<storage, read> o: array<f32>;             // [Bsz*T, *] view, H*Dh
@group(0) @binding(5) var<storage, read> dout: array<f32>;          // [Bsz*T, *] view, H*Dh
@group(0) @binding(6) var<storage, read> lse: array<f32>;           // [Bsz, H, T]
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;   // [Bsz, H, T] (D_t)
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;      // [Bsz*T, *] view, H*Dh
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;      // [Bsz*T, *] view, KVH*Dh
@group(0) @binding(10) var<storage, read_write> dv: array<f32>;     // [Bsz*T, *] view, KVH*Dh

var<workgroup> sh: array<f32, WS>;

@compute @workgroup_size(WG)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let h = wid.y;
  let b = wid.z;
  let g = h / (p.H / p.KVH);
  let Dh = p.Dh;
  let t = wid.x * WG + lid;
  let live = t < p.T;
  let r = b * p.T + t;
  let kv_end = min(min(wid.x * WG + WG, p.T), p.w1);   // uniform per workgroup
  if (p.w0 >= kv_end) { return; }   // uniform: every row of the workgroup was finished earlier
  let mine = live && t >= p.w0;      // this row has keys in the window
  var qr: array<f32, MAXD>;
  var dor: array<f32, MAXD>;
  var acc: array<f32, MAXD>;
  var L = 0.0;
  var Dt = 0.0;
  if (mine) {
    for (var d = 0u; d < Dh; d++) {
      qr[d] = q[p.q_off + r * p.q_str + h * Dh + d] * p.scale;
      let x = dout[p.do_off + r * p.do_str + h * Dh + d];
      dor[d] = x;
      Dt += x * o[p.o_off + r * p.o_str + h * Dh + d];
      acc[d] = 0.0;
    }
    L = lse[(b * p.H + h) * p.T + t];
    if (p.w0 == 0u) { delta[(b * p.H + h) * p.T + t] = Dt; }
  }
  let voff = p.BT * Dh;
  for (var s0 = p.w0; s0 < kv_end; s0 += p.BT) {
    let n = min(p.BT, kv_end - s0);
    for (var e = lid; e < n * Dh; e += WG) {
      let rs = b * p.T + s0 + e / Dh;
      let d = e % Dh;
      sh[e] = k[p.k_off + rs * p.k_str + g * Dh + d];
      sh[voff + e] = v[p.v_off + rs * p.v_str + g * Dh + d];
    }
    workgroupBarrier();
    if (mine) {
      let jn = min(n, max(t + 1u, s0) - s0);   // causal: keys up to t
      for (var j = 0u; j < jn; j++) {
        var sc = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < Dh; d++) {
          sc += qr[d] * sh[j * Dh + d];
          dp += dor[d] * sh[voff + j * Dh + d];
        }
        let ds = exp(sc - L) * (dp - Dt);
        for (var d = 0u; d < Dh; d++) { acc[d] += ds * sh[j * Dh + d]; }
      }
    }
    workgroupBarrier();
  }
  if (mine) {
    for (var d = 0u; d < Dh; d++) {
      let i = p.dq_off + r * p.dq_str + h * Dh + d;
      var x = acc[d] * p.scale;
      if (p.w0 > 0u) { x += dq[i]; }   // a later key window adds
      dq[i] = x;
    }
  }
}

@compute @workgroup_size(WG)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
  let g = wid.y;
  let b = wid.z;
  let G = p.H / p.KVH;
  let Dh = p.Dh;
  let s = wid.x * WG + lid;
  let live = s < p.T;
  let rs = b * p.T + s;
  // queries before the workgroup's first key see none of its keys; this window's: [w0, w1)
  let t_first = max(wid.x * WG, p.w0);
  let t_end = min(p.T, p.w1);
  if (t_first >= t_end) { return; }   // uniform per workgroup
  let mine = live && s < t_end;       // key rows past the window have no queries in it
  let first = s >= p.w0;              // the window holding query s: the row's first
  var kr: array<f32, MAXD>;
  var vr: array<f32, MAXD>;
  var dka: array<f32, MAXD>;
  var dva: array<f32, MAXD>;
  if (mine) {
    for (var d = 0u; d < Dh; d++) {
      kr[d] = k[p.k_off + rs * p.k_str + g * Dh + d] * p.scale;
      vr[d] = v[p.v_off + rs * p.v_str + g * Dh + d];
      dka[d] = 0.0;
      dva[d] = 0.0;
    }
  }
  let doff = p.BT * Dh;        // dO tile
  let loff = 2u * p.BT * Dh;   // lse tile, then D tile at loff + BT
  for (var hi = 0u; hi < G; hi++) {
    let h = g * G + hi;
    for (var t0 = t_first; t0 < t_end; t0 += p.BT) {
      let n = min(p.BT, t_end - t0);
      for (var e = lid; e < n * Dh; e += WG) {
        let rt = b * p.T + t0 + e / Dh;
        let d = e % Dh;
        sh[e] = q[p.q_off + rt * p.q_str + h * Dh + d];
        sh[doff + e] = dout[p.do_off + rt * p.do_str + h * Dh + d];
      }
      for (var i = lid; i < n; i += WG) {
        sh[loff + i] = lse[(b * p.H + h) * p.T + t0 + i];
        sh[loff + p.BT + i] = delta[(b * p.H + h) * p.T + t0 + i];
      }
      workgroupBarrier();
      if (mine) {
        // causal: queries t >= s, i.e. rows i >= s - t0 of this tile
        var i0 = 0u;
        if (s > t0) { i0 = s - t0; }
        for (var i = i0; i < n; i++) {
          var sc = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < Dh; d++) {
            sc += sh[i * Dh + d] * kr[d];
            dp += sh[doff + i * Dh + d] * vr[d];
          }
          let pr = exp(sc - sh[loff + i]);
          let ds = pr * (dp - sh[loff + p.BT + i]);
          for (var d = 0u; d < Dh; d++) {
            dva[d] += pr * sh[doff + i * Dh + d];
            dka[d] += ds * sh[i * Dh + d];
          }
        }
      }
      workgroupBarrier();
    }
  }
  if (mine) {
    for (var d = 0u; d < Dh; d++) {
      let ik = p.dk_off + rs * p.dk_str + g * Dh + d;
      let iv = p.dv_off + rs * p.dv_str + g * Dh + d;
      var xk = dka[d] * p.scale;
      var xv = dva[d];
      // WebGPU refuses two writable bindings of one buffer (a fused [dq | dk | dv] gradient)
      let one_buf = (p.flags & SHARED) != 0u;
      if (!first) {   // a later query window adds
        xk += dk[ik];
        if (one_buf) { xv += dk[iv]; } else { xv += dv[iv]; }
      }
      dk[ik] = xk;
      if (one_buf) { dk[iv] = xv; } else { dv[iv] = xv; }
    }
  }
}
