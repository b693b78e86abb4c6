// Mamba-3 MIMO (rank RK) one-token step with everything between in_proj and out_proj in ONE
// dispatch (py_engine/ops/mamba3_mimo_step.py): the head's per-token scalars (lib/mamba3_prep.wgsl,
// the values mamba3_prep stores), B's and C's RMSNorm over N (each rank's row of the head's group,
// summed as rmsnorm_forward sums: 64 lanes, then the same tree), the angles advanced, k_r and q_r
// rotated, the state update, y_r = S q_r + D v_r, then mamba3_mimo_out's gate (with ONORM the
// head-wise norm of each y_r over P first) and the mimo_o contraction. A decoded MIMO layer is
// then 3 dispatches (in_proj's packed pieces, this, out_proj) where the separate kernels take 7
// (in_proj, B's norm, C's norm, mamba3_prep, mamba3_step, mamba3_mimo_out, out_proj).
//
// Math (mamba3_forward.wgsl's header, T = 1), head h of group g = h / (H / G), sequence b:
//   Bn_r = B_r rsqrt(mean_N B_r^2 + eps) * B_norm.weight   (likewise Cn_r)      r < RK
//   phi = (phi + theta DT) mod 2pi;  k_r = rot(Bn_r + B_bias[h, r], phi), q_r likewise (pairs
//   (i, i + N/2), i < S);  v_r = x mimo_x[h, r]
//   S = alpha S + sum_r (beta v_prev_r k_prev_r^T + gamma v_r k_r^T);  y_r = S q_r + D[h] v_r
//   out = sum_r mimo_o[h, r] * y_r [* rsqrt(mean_P y_r^2 + eps_o) * norm_w[h]] * silu(z mimo_z[h, r])
//
// Two forms (py_engine/ops/mamba3_mimo_step.rows_form picks):
//   mamba3_step_mimo       one 256-thread workgroup per (h, b), grid (H, Bsz): the whole head in
//                          one workgroup, so the head-wise norm (ONORM), which needs every row's
//                          y_r, is folded too (3 dispatches a layer in every case)
//   mamba3_step_mimo_rows  RPW rows of a head a workgroup, grid (H * ceil(P / RPW), Bsz): every
//                          workgroup runs the head's prologue itself and the head's last to have
//                          read the old k and angles writes the new ones (`arrived`, as
//                          mamba3_step_folded.wgsl's mamba3_step_rows_last: no workgroup waits
//                          on another); its rows' states are loaded before the prologue. Without
//                          ONORM only: a row's output needs no other row's.
// Rows: RPW a pass, 32 lanes a row, lane l taking states n = l, l + 32, ..; each row's RK sums
// over n meet in one lane tree per rank.
//
// Storage bindings, 7 (mamba3_step_mimo) or 8 (mamba3_step_mimo_rows: `arrived`): the in_proj
// block, the layer's parameters, out and 4 states -- within the 10 a Mac's Chrome binds (Dawn's
// Metal tier; 16 bindings, one a parameter, kept this kernel off Macs and SwiftShader until the
// thirty-fourth session). in_proj's eight outputs come through ONE binding, `inp` (the mixer has
// its packed in_proj write them side by side: ops/weight_pack.one_binding gives their offsets), and
// the parameters through another, `prm` (packed at load: nn/mamba3.decode_param_packs,
// ops/weight_pack.pack_params; their offsets in `mq`).

//#include "lib/mamba3_params.wgsl"

@group(0) @binding(0) var<uniform> p: Params;       // x/b/c/dt/da/tr/an views into inp; y: out's view

// z's view into inp, the norms' eps, then each parameter's first element in prm
struct MimoStep {
  z_off: u32, z_str: u32, eps_o: f32, eps_bc: f32,
  o_mz: u32, o_mo: u32, o_dtb: u32, o_bb: u32,
  o_cb: u32, o_d: u32, o_mx: u32, o_bn: u32,
  o_cn: u32, o_nw: u32, _q0: u32, _q1: u32,
};
@group(0) @binding(2) var<uniform> mq: MimoStep;

@group(0) @binding(1) var<storage, read> inp: array<f32>;       // in_proj's outputs [Bsz, *] views
@group(0) @binding(3) var<storage, read> prm: array<f32>;       // the parameters below, packed
@group(0) @binding(13) var<storage, read_write> out: array<f32>;   // [Bsz, *] view, H*P wide
@group(0) @binding(14) var<storage, read_write> s_ang: array<f32>; // [Bsz, H, S], in place
@group(0) @binding(15) var<storage, read_write> s_ssm: array<f32>; // [Bsz, H, P, N], in place
@group(0) @binding(16) var<storage, read_write> s_k: array<f32>;   // [Bsz, RK, H, N], in place
@group(0) @binding(17) var<storage, read_write> s_v: array<f32>;   // [Bsz, H, P], in place

fn mimo_z(i: u32) -> f32 { return prm[mq.o_mz + i]; }    // [H, RK, P]
fn mimo_o(i: u32) -> f32 { return prm[mq.o_mo + i]; }    // [H, RK, P]
fn dt_bias_at(h: u32) -> f32 { return prm[mq.o_dtb + h]; }  // [H]
fn B_bias(i: u32) -> f32 { return prm[mq.o_bb + i]; }    // [H, RK, N]
fn C_bias(i: u32) -> f32 { return prm[mq.o_cb + i]; }    // [H, RK, N]
fn Dv(h: u32) -> f32 { return prm[mq.o_d + h]; }         // [H]
fn mimo_x(i: u32) -> f32 { return prm[mq.o_mx + i]; }    // [H, RK, P]
fn B_normw(n: u32) -> f32 { return prm[mq.o_bn + n]; }   // [N]
fn C_normw(n: u32) -> f32 { return prm[mq.o_cn + n]; }   // [N]
fn norm_w(i: u32) -> f32 { return prm[mq.o_nw + i]; }    // [H*P] (ONORM only)

// The rank as a pipeline constant: the per-rank loops then have constant trip counts and the
// per-thread arrays below index registers (arrays indexed by runtime loops ran slowly on the
// H200: ssd_chunked.wgsl's first form).
override RK: u32 = 4u;
override ONORM: bool = false;
// sh's floats (host-set): k [RK][N] | k_prev [RK][N] | q [RK][N] | phi [S] | 1/rms of B, C and
// y per rank [3][RK] | y [RK][P]
override WSM: u32 = 2048u;
var<workgroup> sh: array<f32, WSM>;
override RED: u32 = 1024u;                 // 256 * max(RK, 2): the lane trees
var<workgroup> red: array<f32, RED>;

const LANES = 32u;
const RPW = 8u;                            // rows a pass of the 256 threads

fn raw_dt(r: u32, h: u32) -> f32 { return inp[p.dt_off + r * p.dt_str + h]; }
fn raw_da(r: u32, h: u32) -> f32 { return inp[p.da_off + r * p.da_str + h]; }
fn raw_trap(r: u32, h: u32) -> f32 { return inp[p.tr_off + r * p.tr_str + h]; }
fn raw_angle(r: u32, i: u32) -> f32 { return inp[p.an_off + r * p.an_str + i]; }

//#include "lib/mamba3_prep.wgsl"

fn o_k() -> u32 { return 0u; }
fn o_kprev() -> u32 { return RK * p.N; }
fn o_q() -> u32 { return 2u * RK * p.N; }
fn o_phi() -> u32 { return 3u * RK * p.N; }
fn o_rs() -> u32 { return 3u * RK * p.N + p.S; }   // [3][RK]: B, C, y
fn o_y() -> u32 { return o_rs() + 3u * RK; }

// 1/rms over N of each rank's B and C row of group g into sh (rmsnorm_forward's sums: lane l of
// 64 sums n = l, l + 64, .. ascending, then workgroup_sum64's tree), four ranks at a time.
// Uniform control flow (barriers).
fn norm_sums(b: u32, g: u32, lid: u32) {
  let N = p.N;
  let l = lid % 64u;
  for (var r0 = 0u; r0 < RK; r0 += 4u) {
    let r = r0 + lid / 64u;
    var sb = 0.0;
    var sc = 0.0;
    if (r < RK) {
      let bo = p.b_off + b * p.b_str + (r * p.G + g) * N;
      let co = p.c_off + b * p.c_str + (r * p.G + g) * N;
      for (var j = l; j < N; j += 64u) {
        let vb = inp[bo + j];
        sb += vb * vb;
        let vc = inp[co + j];
        sc += vc * vc;
      }
    }
    red[lid] = sb;
    red[256u + lid] = sc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
      if (l < s) {
        red[lid] += red[lid + s];
        red[256u + lid] += red[256u + lid + s];
      }
      workgroupBarrier();
    }
    if (l == 0u && r < RK) {
      sh[o_rs() + r] = inverseSqrt(red[lid] / f32(N) + mq.eps_bc);
      sh[o_rs() + RK + r] = inverseSqrt(red[256u + lid] / f32(N) + mq.eps_bc);
    }
    workgroupBarrier();
  }
}

// k_r / q_r's input at dim n: the normalised B_r / C_r plus the head's bias
fn k_in(b: u32, h: u32, g: u32, r: u32, n: u32) -> f32 {
  let v = inp[p.b_off + b * p.b_str + (r * p.G + g) * p.N + n];
  return v * sh[o_rs() + r] * B_normw(n) + B_bias((h * RK + r) * p.N + n);
}

fn q_in(b: u32, h: u32, g: u32, r: u32, n: u32) -> f32 {
  let v = inp[p.c_off + b * p.c_str + (r * p.G + g) * p.N + n];
  return v * sh[o_rs() + RK + r] * C_normw(n) + C_bias((h * RK + r) * p.N + n);
}

// One state of a row (ssm index i, dim n): S = alpha S_old + sum_r (bv_r k_prev_r[n] + gv_r
// k_r[n]) stored, and acc_r += S q_r[n] -- mamba3_step's order.
fn state_update(i: u32, n: u32, old: f32, alpha: f32, bv: ptr<function, array<f32, MAX_R>>,
                gv: ptr<function, array<f32, MAX_R>>, acc: ptr<function, array<f32, MAX_R>>) {
  let N = p.N;
  var s = alpha * old;
  for (var r = 0u; r < RK; r++) {
    s += (*bv)[r] * sh[o_kprev() + r * N + n] + (*gv)[r] * sh[o_k() + r * N + n];
  }
  s_ssm[i] = s;
  for (var r = 0u; r < RK; r++) { (*acc)[r] += s * sh[o_q() + r * N + n]; }
}

// Each rank's sum of acc over a row's 32 lanes, into red[r * 256 + lid] of the row's lane 0.
// Uniform control flow (barriers); red is free again once the caller has read it and passed a
// barrier.
fn lane_sums(lid: u32, acc: ptr<function, array<f32, MAX_R>>) {
  let lane = lid % LANES;
  for (var r = 0u; r < RK; r++) { red[r * 256u + lid] = (*acc)[r]; }
  workgroupBarrier();
  for (var st = LANES / 2u; st > 0u; st >>= 1u) {
    if (lane < st) {
      for (var r = 0u; r < RK; r++) { red[r * 256u + lid] += red[r * 256u + lid + st]; }
    }
    workgroupBarrier();
  }
}

// The head's prologue, 256 threads, uniform control flow (barriers): B's and C's 1/rms, the
// angles advanced and the old k into sh, then k_r and q_r rotated into sh (mamba3_step_common's
// rotate_kq with the MIMO pairs). Leaves the k and angle states as they were.
fn prologue(b: u32, h: u32, dt: f32, lid: u32) {
  let N = p.N;
  let S = p.S;
  let RN = RK * N;
  let g = h / (p.H / p.G);
  let bh = b * p.H + h;
  norm_sums(b, g, lid);
  for (var i = lid; i < S; i += 256u) {
    sh[o_phi() + i] = wrap_angle(s_ang[bh * S + i] + prep_value(b, 4u * p.H + i) * dt);
  }
  for (var e = lid; e < RN; e += 256u) { sh[o_kprev() + e] = s_k[k_index(b, h, e)]; }
  workgroupBarrier();
  for (var e = lid; e < RN; e += 256u) {
    let r = e / N;
    let n = e % N;
    let kb = k_in(b, h, g, r, n);
    let qb = q_in(b, h, g, r, n);
    var kq = vec2<f32>(kb, qb);
    let pr = pair_of(n, N);
    if (pr.rot) {
      kq = rotated(kb, qb, k_in(b, h, g, r, pr.m), q_in(b, h, g, r, pr.m),
                   sin_cos(sh[o_phi() + pr.i]), pr.first);
    }
    sh[o_k() + e] = kq.x;
    sh[o_q() + e] = kq.y;
  }
  workgroupBarrier();
}

// The new k (sh's k) and angles into their states.
fn write_k_angles(b: u32, h: u32, lid: u32) {
  for (var e = lid; e < RK * p.N; e += 256u) { s_k[k_index(b, h, e)] = sh[o_k() + e]; }
  for (var i = lid; i < p.S; i += 256u) { s_ang[(b * p.H + h) * p.S + i] = sh[o_phi() + i]; }
}

@compute @workgroup_size(256)
fn mamba3_step_mimo(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  if (h >= p.H || b >= p.nb) { return; }   // uniform: depends on the workgroup only
  let N = p.N;
  let P = p.P;
  let bh = b * p.H + h;
  let dt = prep_value(b, h);
  let alpha = prep_value(b, p.H + h);
  let beta = prep_value(b, 2u * p.H + h);
  let gamma = prep_value(b, 3u * p.H + h);
  let Dh = Dv(h);
  prologue(b, h, dt, lid);
  write_k_angles(b, h, lid);               // every thread has its old k in sh: a barrier above
  workgroupBarrier();
  // the rows, RPW a pass: S = alpha S + sum_r (bv_r k_prev_r + gv_r k_r), acc_r += S q_r
  let lane = lid % LANES;
  let slot = lid / LANES;
  let J = (N + LANES - 1u) / LANES;
  let passes = (P + RPW - 1u) / RPW;       // uniform: every thread runs every pass
  for (var ps = 0u; ps < passes; ps++) {
    let pp = ps * RPW + slot;
    let live = pp < P;
    var xv = 0.0;
    var vp = 0.0;
    if (live) {
      xv = inp[p.x_off + b * p.x_str + h * P + pp];
      vp = s_v[bh * P + pp];
    }
    var bv: array<f32, MAX_R>;
    var gv: array<f32, MAX_R>;
    var acc: array<f32, MAX_R>;
    for (var r = 0u; r < RK; r++) {
      var w = 0.0;
      if (live) { w = mimo_x((h * RK + r) * P + pp); }
      bv[r] = beta * vp * w;
      gv[r] = gamma * xv * w;
      acc[r] = 0.0;
    }
    if (live) {
      let base = (bh * P + pp) * N;
      for (var j = 0u; j < J; j++) {
        let n = j * LANES + lane;
        if (n < N) { state_update(base + n, n, s_ssm[base + n], alpha, &bv, &gv, &acc); }
      }
    }
    lane_sums(lid, &acc);
    if (lane == 0u && live) {
      s_v[bh * P + pp] = xv;
      for (var r = 0u; r < RK; r++) {
        sh[o_y() + r * P + pp] = red[r * 256u + lid] + Dh * xv * mimo_x((h * RK + r) * P + pp);
      }
    }
    workgroupBarrier();                    // red is rewritten by the next pass
  }
  // mamba3_mimo_out: each rank's 1/rms over P (ONORM; one thread a rank, p ascending, as there)
  if (lid < RK) {
    var rs = 1.0;
    if (ONORM) {
      var ss = 0.0;
      for (var pp = 0u; pp < P; pp++) { let v = sh[o_y() + lid * P + pp]; ss += v * v; }
      rs = inverseSqrt(ss / f32(P) + mq.eps_o);
    }
    sh[o_rs() + 2u * RK + lid] = rs;
  }
  workgroupBarrier();
  for (var pp = lid; pp < P; pp += 256u) {
    let zv = inp[mq.z_off + b * mq.z_str + h * P + pp];
    var w = 1.0;
    if (ONORM) { w = norm_w(h * P + pp); }
    var o = 0.0;
    for (var r = 0u; r < RK; r++) {
      let wi = (h * RK + r) * P + pp;
      let gr = sh[o_y() + r * P + pp] * sh[o_rs() + 2u * RK + r] * w * silu(zv * mimo_z(wi));
      o += gr * mimo_o(wi);
    }
    out[p.y_off + b * p.y_str + h * P + pp] = o;
  }
}

// arrived [Bsz, H]: the workgroups of a head that have read the old k and angles this dispatch
// (0 between dispatches: the last to arrive sets it back; ops/mamba3._arrived, shared with the
// SISO step)
@group(0) @binding(21) var<storage, read_write> arrived: array<atomic<u32>>;
var<workgroup> last_to_arrive: u32;

const MAXJ = 4u;                           // a lane's states loaded before the prologue (N <= 128)

@compute @workgroup_size(256)
fn mamba3_step_mimo_rows(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let blocks = (p.P + RPW - 1u) / RPW;
  if (wid.x >= p.H * blocks || wid.y >= p.nb) { return; }   // uniform
  let b = wid.y;
  let h = wid.x / blocks;
  let N = p.N;
  let P = p.P;
  let bh = b * p.H + h;
  let lane = lid % LANES;
  let pp = (wid.x % blocks) * RPW + lid / LANES;
  let live = pp < P;
  let base = (bh * P + pp) * N;
  // what the row's update reads and the prologue does not produce, loaded first
  var hs: array<f32, MAXJ>;
  var xv = 0.0;
  var vp = 0.0;
  var w: array<f32, MAX_R>;
  if (live) {
    for (var jj = 0u; jj < MAXJ; jj++) {
      let n = jj * LANES + lane;
      if (n < N) { hs[jj] = s_ssm[base + n]; }
    }
    xv = inp[p.x_off + b * p.x_str + h * P + pp];
    vp = s_v[bh * P + pp];
    for (var r = 0u; r < RK; r++) { w[r] = mimo_x((h * RK + r) * P + pp); }
  }
  let dt = prep_value(b, h);
  let alpha = prep_value(b, p.H + h);
  let beta = prep_value(b, 2u * p.H + h);
  let gamma = prep_value(b, 3u * p.H + h);
  prologue(b, h, dt, lid);
  // the old k and angles are in sh (a barrier in the prologue): this workgroup has read them.
  // What orders those reads before the last arriver's writes, WGSL's atomics being relaxed:
  // mamba3_step_folded.wgsl's mamba3_step_rows_last says.
  if (lid == 0u) {
    let before = atomicAdd(&arrived[bh], 1u);
    last_to_arrive = select(0u, 1u, before + 1u == blocks);
    if (before + 1u == blocks) { atomicStore(&arrived[bh], 0u); }
  }
  workgroupBarrier();
  if (last_to_arrive == 1u) { write_k_angles(b, h, lid); }
  var bv: array<f32, MAX_R>;
  var gv: array<f32, MAX_R>;
  var acc: array<f32, MAX_R>;
  for (var r = 0u; r < RK; r++) {
    bv[r] = beta * vp * w[r];
    gv[r] = gamma * xv * w[r];
    acc[r] = 0.0;
  }
  if (live) {
    let J = (N + LANES - 1u) / LANES;
    for (var j0 = 0u; j0 < J; j0 += MAXJ) {
      for (var jj = 0u; jj < MAXJ; jj++) {  // a constant trip count: hs[jj] stays a register
        let n = (j0 + jj) * LANES + lane;
        if (n < N) {
          var hv = hs[jj];
          if (j0 > 0u) { hv = s_ssm[base + n]; }
          state_update(base + n, n, hv, alpha, &bv, &gv, &acc);
        }
      }
    }
  }
  lane_sums(lid, &acc);
  if (lane == 0u && live) {                // mamba3_mimo_out without the norm (rs = 1, w = 1)
    s_v[bh * P + pp] = xv;
    let Dh = Dv(h);
    let zv = inp[mq.z_off + b * mq.z_str + h * P + pp];
    var o = 0.0;
    for (var r = 0u; r < RK; r++) {
      let wi = (h * RK + r) * P + pp;
      let yr = red[r * 256u + lid] + Dh * xv * w[r];
      o += yr * silu(zv * mimo_z(wi)) * mimo_o(wi);   // y_r * 1 * 1 there: the same bits
    }
    out[p.y_off + b * p.y_str + h * P + pp] = o;
  }
}
