// Causal grouped-query attention, sequence forward: the real-GPU path (py_engine/ops/attention.py
// picks it on hardware adapters; software adapters keep the one-thread-per-query kernel in
// attention_forward.wgsl, which also holds the cache-write entry). Same math, uniform and
// bindings as attention_forward:
//
//   S[t, s] = scale q_t[h] . k_s[g]     g = h / (H / KVH),  s <= start + t  (causal)
//   o_t[h]  = sum_s softmax_s(S[t, :]) v_s[g];   lse[b, h, t] = log sum_s exp(S[t, s])  (SAVE)
//
// Layout: as attention_forward.wgsl (q, o views [Bsz*T, *] head-major; keys/values through the
// 4-D address off + b*bstr + g*hstr + s*sstr + d: a k/v view or the cache [Bsz, KVH, Tmax, Dh]).
//
// Dispatch: grid (ceil(T / TQ), H, Bsz), WG = 256 threads = TQ (16) query rows x TX (16) threads
// per row. Thread (i, x) owns scores S[i, x + TX c] (c < NK = BK / TX) of each key tile and
// output dims d = x + TX c (c < ND = ceil(DH / TX)), so private arrays hold at most 4 + 16
// floats (no spills; DH and BK are pipeline constants, the loops unroll). Per key tile of BK
// rows (keys 0 .. the workgroup's last query slot), 3 barriers:
//   1. stage K [BK, DH] into workgroup memory;                                  barrier
//   2. S[i, j] = q_i . k_j from workgroup memory (q tile staged once), causal mask; barrier
//   3. stage V over K; every thread of row i takes the tile's row max m' (the same
//      BK values in the same order: all 16 agree bit for bit) and writes its own
//      P[i, j] = exp(S - m');                                                      barrier
//   4. o_i <- o_i exp(m - m') + sum_j P[i, j] v_j,  l <- l exp(m - m') + sum_j P[i, j]
//      (j ascending)
// No cross-thread reductions, no atomics, no subgroups: every output element is summed by one
// thread in a fixed order, so a rerun is bit-identical.
// Workgroup memory (floats): Q [TQ, QST] | K/V [BK, KST] | S [TQ, SST] | P [TQ, SST] = WS, row
// strides padded odd (QST, KST = DH or DH + 1; SST = BK + 1) against bank conflicts; the host
// sizes BK (a multiple of TX, <= 64) from maxComputeWorkgroupStorageSize.
// Work: T (start + T/2) Dh * 4 flops per head; K/V read once per 16 queries.

const SAVE = 1u;
const TQ = 16u;             // query rows per workgroup
const TX = 16u;             // threads per query row
const WG = 256u;            // TQ * TX
const MAXK = 4u;            // scores per thread per tile: BK <= TX * MAXK = 64
const MAXC = 16u;           // output dims per thread: DH <= TX * MAXC = 256
const NEG_BIG = -3.0e38;    // masked score / empty running max (WGSL assumes no infs)

override DH: u32 = 64u;     // head_dim
override BK: u32 = 64u;     // keys per tile (multiple of TX, <= 64)
override NK: u32 = 4u;      // BK / TX
override ND: u32 = 4u;      // ceil(DH / TX)
override QST: u32 = 65u;    // row stride of the Q tile
override KST: u32 = 65u;    // row stride of the K/V tile
override SST: u32 = 65u;    // row stride of S and P: BK + 1
override WS: u32 = 7280u;   // TQ*QST + BK*KST + 2*TQ*SST

struct Params {
  T: u32, H: u32, KVH: u32, Dh: u32,
  nb: u32, BK: u32, start: u32, flags: u32,
  scale: f32, Tmax: u32, q_off: u32, q_str: u32,
  o_off: u32, o_str: u32, k_off: u32, k_bstr: u32,    // o view; k address
  k_hstr: u32, k_sstr: u32, v_off: u32, v_bstr: u32,  // v address
  v_hstr: u32, v_sstr: u32, kin_off: u32, kin_str: u32, // cache write only
  vin_off: u32, vin_str: u32, ck_off: u32, cv_off: u32, // cache write only
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // [Bsz*T, *] view, H*Dh wide
@group(0) @binding(2) var<storage, read> kk: array<f32>;         // keys: k view or cache_k
@group(0) @binding(3) var<storage, read> vv: array<f32>;         // values: v view or cache_v
@group(0) @binding(4) var<storage, read_write> o: array<f32>;    // [Bsz*T, *] view, H*Dh wide
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;  // [Bsz, H, T] (SAVE)

var<workgroup> sh: array<f32, WS>;   // Q [TQ, QST] | K or V [BK, KST] | S [TQ, SST] | P [TQ, SST]

@compute @workgroup_size(WG)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
  let h = wid.y;
  let b = wid.z;
  let g = h / (p.H / p.KVH);
  let i = lid / TX;            // query row within the tile
  let x = lid % TX;            // this thread's lane within the row
  let t0 = wid.x * TQ;
  let t = t0 + i;
  let live = t < p.T;
  let KO = TQ * QST;           // K/V tile
  let SO = KO + BK * KST;      // S
  let PO = SO + TQ * SST;      // P
  // the Q tile, pre-scaled (rows past T are zeros: finite scores, masked anyway)
  for (var e = lid; e < TQ * DH; e += WG) {
    let ii = e / DH;
    let d = e % DH;
    var xq = 0.0;
    if (t0 + ii < p.T) { xq = q[p.q_off + (b * p.T + t0 + ii) * p.q_str + h * DH + d] * p.scale; }
    sh[ii * QST + d] = xq;
  }
  // keys this workgroup needs: slots 0 .. start + (its last query), uniform per workgroup
  let kv_end = p.start + min(t0 + TQ, p.T);
  let my_end = p.start + t + 1u;   // this row's keys: slots < my_end
  let kb = p.k_off + b * p.k_bstr + g * p.k_hstr;
  let vb = p.v_off + b * p.v_bstr + g * p.v_hstr;
  var m = NEG_BIG;
  var l = 0.0;
  var acc: array<f32, MAXC>;
  for (var c = 0u; c < MAXC; c++) { acc[c] = 0.0; }
  for (var s0 = 0u; s0 < kv_end; s0 += BK) {
    let n = min(BK, kv_end - s0);
    for (var e = lid; e < n * DH; e += WG) {
      let j = e / DH;
      let d = e % DH;
      sh[KO + j * KST + d] = kk[kb + (s0 + j) * p.k_sstr + d];
    }
    workgroupBarrier();
    var sc: array<f32, MAXK>;
    for (var c = 0u; c < MAXK; c++) { sc[c] = 0.0; }
    for (var d = 0u; d < DH; d++) {
      let qd = sh[i * QST + d];
      for (var c = 0u; c < NK; c++) { sc[c] += qd * sh[KO + (x + TX * c) * KST + d]; }
    }
    for (var c = 0u; c < NK; c++) {
      let j = x + TX * c;
      // causal (and j < n: my_end <= kv_end for a live row)
      sh[SO + i * SST + j] = select(NEG_BIG, sc[c], live && s0 + j < my_end);
    }
    workgroupBarrier();
    for (var e = lid; e < n * DH; e += WG) {   // V over K (all reads of K are done)
      let j = e / DH;
      let d = e % DH;
      sh[KO + j * KST + d] = vv[vb + (s0 + j) * p.v_sstr + d];
    }
    var mt = m;
    for (var j = 0u; j < BK; j++) { mt = max(mt, sh[SO + i * SST + j]); }
    for (var c = 0u; c < NK; c++) {
      let j = x + TX * c;
      let s = sh[SO + i * SST + j];
      sh[PO + i * SST + j] = select(0.0, exp(s - mt), s > NEG_BIG);
    }
    // rescale what was summed so far (m = NEG_BIG before the first key: acc = l = 0 anyway)
    let cr = exp(max(m - mt, -100.0));
    m = mt;
    workgroupBarrier();
    for (var c = 0u; c < ND; c++) { acc[c] *= cr; }
    var ps = 0.0;
    for (var j = 0u; j < n; j++) {
      let pj = sh[PO + i * SST + j];
      ps += pj;
      // dims past DH read the next row's padding / S: garbage in acc slots never written
      for (var c = 0u; c < ND; c++) { acc[c] += pj * sh[KO + j * KST + x + TX * c]; }
    }
    l = l * cr + ps;
    workgroupBarrier();
  }
  if (live) {
    let inv = 1.0 / l;   // l >= 1: the key at the running max contributes exp(0)
    let r = b * p.T + t;
    for (var c = 0u; c < ND; c++) {
      let d = x + TX * c;
      if (d < DH) { o[p.o_off + r * p.o_str + h * DH + d] = acc[c] * inv; }
    }
    if ((p.flags & SAVE) != 0u && x == 0u) { lse[(b * p.H + h) * p.T + t] = m + log(l); }
  }
}
