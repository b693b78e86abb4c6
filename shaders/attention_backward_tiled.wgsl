// Causal grouped-query attention backward (training: no cache, start = 0): the real-GPU path
// (py_engine/ops/attention.py picks it on hardware adapters; software adapters keep the
// one-thread-per-row kernels of attention_backward.wgsl). Same math, uniform and bindings:
//
//   P[t, s] = exp(scale q_t . k_s - lse_t)   (s <= t)      D_t = do_t . o_t
//   dS      = P (do_t . v_s - D_t)
//   dq_t    = scale sum_{s <= t} dS[t, s] k_s
//   dk_s    = scale sum_{h in group} sum_{t >= s} dS[t, s] q_t      (g = h / (H / KVH))
//   dv_s    =       sum_{h in group} sum_{t >= s} P[t, s] do_t
//
// Layout: as attention_backward.wgsl (views [Bsz*T, *], head-major; lse, delta [Bsz, H, T];
// dk/dv possibly one binding: SHARED).
//
// Dispatches (2), WG = 256 threads = 16 rows x TX (16) threads per row; thread (i, x) owns the
// tile entries [i, x + TX c] (c < NK = BT / TX) and the row's dims d = x + TX c (c < ND =
// ceil(DH / TX)): private arrays of at most 2 x 4 + 2 x 16 floats. DH and BT are pipeline
// constants (loops unroll).
//   attention_backward_dq_tiled   grid (ceil(T / 16), H, Bsz): 16 query rows per workgroup
//       (q pre-scaled, dO staged once; lane 0 of a row writes D_t); per key tile of BT rows
//       (0 .. the last query): stage K | V; barrier; dS[i, j] (causal); barrier;
//       dq_i += sum_j dS[i, j] k_j (j ascending); barrier.
//   attention_backward_dkv_tiled  grid (ceil(T / 16), KVH, Bsz): 16 key rows per workgroup
//       (k pre-scaled, v staged once); for each query head of the group in order, per query
//       tile of BT rows (the first key .. T-1): stage Q | dO | lse | D; barrier; P and dS
//       [i, j] (causal: t >= s); barrier; dv_i += sum_j P[i, j] do_j, dk_i += sum_j dS[i, j]
//       q_j (j ascending); barrier.
// Every gradient element is owned by one thread and summed in a fixed order (heads ascending,
// then tokens ascending): deterministic, no atomics, no subgroups.
// Workgroup memory (floats), row strides padded odd against bank conflicts (RST, TST = DH or
// DH + 1; SST = BT + 1):
//   dq:  Q [16, RST] | dO [16, RST] | lse, D [16] x 2 | K [BT, TST] | V [BT, TST] | dS [16, SST]
//   dkv: K [16, RST] | V [16, RST] | lse, D [BT] x 2 | Q [BT, TST] | dO [BT, TST] |
//        P [16, SST] | dS [16, SST]
// = WS; the host sizes BT (a multiple of TX, <= 64) from maxComputeWorkgroupStorageSize.

const TR = 16u;             // rows (queries or keys) per workgroup
const TX = 16u;             // threads per row
const WG = 256u;            // TR * TX
const MAXK = 4u;            // tile entries per thread: BT <= TX * MAXK = 64
const MAXC = 16u;           // dims per thread: DH <= TX * MAXC = 256
const SHARED = 1u;          // dk and dv are one buffer: both written through the dk binding

override DH: u32 = 64u;     // head_dim
override BT: u32 = 64u;     // rows per staged tile (multiple of TX, <= 64)
override NK: u32 = 4u;      // BT / TX
override ND: u32 = 4u;      // ceil(DH / TX)
override RST: u32 = 65u;    // row stride of the workgroup's own rows
override TST: u32 = 65u;    // row stride of the staged tiles
override SST: u32 = 65u;    // row stride of P / dS: BT + 1
override WS: u32 = 12512u;  // floats (see the layouts above)

struct Params {
  T: u32, H: u32, KVH: u32, Dh: u32,
  nb: u32, BT: u32, scale: f32, flags: u32,
  q_off: u32, q_str: u32, k_off: u32, k_str: u32,
  v_off: u32, v_str: u32, o_off: u32, o_str: u32,
  do_off: u32, do_str: u32, dq_off: u32, dq_str: u32,
  dk_off: u32, dk_str: u32, dv_off: u32, dv_str: u32,
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
fn attention_backward_dq_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
  let h = wid.y;
  let b = wid.z;
  let g = h / (p.H / p.KVH);
  let i = lid / TX;
  let x = lid % TX;
  let t0 = wid.x * TR;
  let t = t0 + i;
  let live = t < p.T;
  let DO = TR * RST;           // dO rows
  let LO = 2u * TR * RST;      // lse [TR], then D [TR]
  let KO = LO + 2u * TR;       // K tile
  let VO = KO + BT * TST;      // V tile
  let SO = VO + BT * TST;      // dS
  for (var e = lid; e < TR * DH; e += WG) {
    let ii = e / DH;
    let d = e % DH;
    var xq = 0.0;
    var xd = 0.0;
    if (t0 + ii < p.T) {
      let r = b * p.T + t0 + ii;
      xq = q[p.q_off + r * p.q_str + h * DH + d] * p.scale;
      xd = dout[p.do_off + r * p.do_str + h * DH + d];
    }
    sh[ii * RST + d] = xq;
    sh[DO + ii * RST + d] = xd;
  }
  if (x == 0u) {
    var L = 0.0;
    var Dt = 0.0;
    if (live) {
      let r = b * p.T + t;
      for (var d = 0u; d < DH; d++) {
        Dt += dout[p.do_off + r * p.do_str + h * DH + d] * o[p.o_off + r * p.o_str + h * DH + d];
      }
      L = lse[(b * p.H + h) * p.T + t];
      delta[(b * p.H + h) * p.T + t] = Dt;
    }
    sh[LO + i] = L;
    sh[LO + TR + i] = Dt;
  }
  let kv_end = min(t0 + TR, p.T);   // uniform per workgroup
  var acc: array<f32, MAXC>;
  for (var c = 0u; c < MAXC; c++) { acc[c] = 0.0; }
  for (var s0 = 0u; s0 < kv_end; s0 += BT) {
    let n = min(BT, kv_end - s0);
    for (var e = lid; e < n * DH; e += WG) {
      let rs = b * p.T + s0 + e / DH;
      let d = e % DH;
      sh[KO + (e / DH) * TST + d] = k[p.k_off + rs * p.k_str + g * DH + d];
      sh[VO + (e / DH) * TST + d] = v[p.v_off + rs * p.v_str + g * DH + d];
    }
    workgroupBarrier();
    var sc: array<f32, MAXK>;
    var dp: array<f32, MAXK>;
    for (var c = 0u; c < MAXK; c++) { sc[c] = 0.0; dp[c] = 0.0; }
    for (var d = 0u; d < DH; d++) {
      let qd = sh[i * RST + d];
      let dd = sh[DO + i * RST + d];
      for (var c = 0u; c < NK; c++) {
        let a = (x + TX * c) * TST + d;
        sc[c] += qd * sh[KO + a];
        dp[c] += dd * sh[VO + a];
      }
    }
    let L = sh[LO + i];
    let Dt = sh[LO + TR + i];
    for (var c = 0u; c < NK; c++) {
      let j = x + TX * c;
      let ds = exp(sc[c] - L) * (dp[c] - Dt);
      sh[SO + i * SST + j] = select(0.0, ds, live && s0 + j <= t);   // causal: keys up to t
    }
    workgroupBarrier();
    for (var j = 0u; j < n; j++) {
      let ds = sh[SO + i * SST + j];
      for (var c = 0u; c < ND; c++) { acc[c] += ds * sh[KO + j * TST + x + TX * c]; }
    }
    workgroupBarrier();
  }
  if (live) {
    let r = b * p.T + t;
    for (var c = 0u; c < ND; c++) {
      let d = x + TX * c;
      if (d < DH) { dq[p.dq_off + r * p.dq_str + h * DH + d] = acc[c] * p.scale; }
    }
  }
}

@compute @workgroup_size(WG)
fn attention_backward_dkv_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
  let g = wid.y;
  let b = wid.z;
  let G = p.H / p.KVH;
  let i = lid / TX;
  let x = lid % TX;
  let s_first = wid.x * TR;    // queries before the workgroup's first key see none of its keys
  let s = s_first + i;
  let live = s < p.T;
  let VRO = TR * RST;          // v rows
  let LO = 2u * TR * RST;      // lse [BT], then D [BT]
  let QO = LO + 2u * BT;       // Q tile
  let DOO = QO + BT * TST;     // dO tile
  let PO = DOO + BT * TST;     // P
  let SO = PO + TR * SST;      // dS
  for (var e = lid; e < TR * DH; e += WG) {
    let ii = e / DH;
    let d = e % DH;
    var xk = 0.0;
    var xv = 0.0;
    if (s_first + ii < p.T) {
      let r = b * p.T + s_first + ii;
      xk = k[p.k_off + r * p.k_str + g * DH + d] * p.scale;
      xv = v[p.v_off + r * p.v_str + g * DH + d];
    }
    sh[ii * RST + d] = xk;
    sh[VRO + ii * RST + d] = xv;
  }
  var dka: array<f32, MAXC>;
  var dva: array<f32, MAXC>;
  for (var c = 0u; c < MAXC; c++) { dka[c] = 0.0; dva[c] = 0.0; }
  for (var hi = 0u; hi < G; hi++) {
    let h = g * G + hi;
    for (var t0 = s_first; t0 < p.T; t0 += BT) {
      let n = min(BT, p.T - t0);
      for (var e = lid; e < n * DH; e += WG) {
        let rt = b * p.T + t0 + e / DH;
        let d = e % DH;
        sh[QO + (e / DH) * TST + d] = q[p.q_off + rt * p.q_str + h * DH + d];
        sh[DOO + (e / DH) * TST + d] = dout[p.do_off + rt * p.do_str + h * DH + d];
      }
      for (var e = lid; e < n; e += WG) {
        sh[LO + e] = lse[(b * p.H + h) * p.T + t0 + e];
        sh[LO + BT + e] = delta[(b * p.H + h) * p.T + t0 + e];
      }
      workgroupBarrier();
      var sc: array<f32, MAXK>;
      var dp: array<f32, MAXK>;
      for (var c = 0u; c < MAXK; c++) { sc[c] = 0.0; dp[c] = 0.0; }
      for (var d = 0u; d < DH; d++) {
        let kd = sh[i * RST + d];
        let vd = sh[VRO + i * RST + d];
        for (var c = 0u; c < NK; c++) {
          let a = (x + TX * c) * TST + d;
          sc[c] += kd * sh[QO + a];
          dp[c] += vd * sh[DOO + a];
        }
      }
      for (var c = 0u; c < NK; c++) {
        let j = x + TX * c;
        let ok = live && j < n && t0 + j >= s;   // causal: queries t >= s
        let pr = exp(sc[c] - sh[LO + j]);
        sh[PO + i * SST + j] = select(0.0, pr, ok);
        sh[SO + i * SST + j] = select(0.0, pr * (dp[c] - sh[LO + BT + j]), ok);
      }
      workgroupBarrier();
      for (var j = 0u; j < n; j++) {
        let pj = sh[PO + i * SST + j];
        let dsj = sh[SO + i * SST + j];
        for (var c = 0u; c < ND; c++) {
          let a = j * TST + x + TX * c;
          dva[c] += pj * sh[DOO + a];
          dka[c] += dsj * sh[QO + a];
        }
      }
      workgroupBarrier();
    }
  }
  if (live) {
    let rs = b * p.T + s;
    for (var c = 0u; c < ND; c++) {
      let d = x + TX * c;
      if (d < DH) {
        dk[p.dk_off + rs * p.dk_str + g * DH + d] = dka[c] * p.scale;
        // WebGPU refuses two writable bindings of one buffer (a fused [dq | dk | dv] gradient)
        if ((p.flags & SHARED) != 0u) {
          dk[p.dv_off + rs * p.dv_str + g * DH + d] = dva[c];
        } else {
          dv[p.dv_off + rs * p.dv_str + g * DH + d] = dva[c];
        }
      }
    }
  }
}
