// The body of Mamba-3's folded SISO step, shared by shaders/mamba3_step_folded.wgsl (x, B and C
// through bindings of their own) and shaders/mamba3_step_folded_one.wgsl (through the raw
// scalars' binding, `raw`, where in_proj wrote all seven side by side): the including file
// defines fn x_val, bn_val and cn_val (lib/mamba3_step_common.wgsl's). The forms, the bindings
// and the math: mamba3_step_folded.wgsl's header.
//#include "lib/mamba3_step_common.wgsl"

@group(0) @binding(1) var<storage, read> raw: array<f32>;       // dd_dt | dd_A | trap | angles views (x | B | C too: _one)
@group(0) @binding(5) var<storage, read> prm: array<f32>;       // the parameters below, packed
// each parameter's first element in prm (the norms' weights: NORM_BC only)
struct ParamOffsets { dtb: u32, bb: u32, cb: u32, d: u32, bn: u32, cn: u32, _q0: u32, _q1: u32 };
@group(0) @binding(4) var<uniform> po: ParamOffsets;

fn dt_bias_at(h: u32) -> f32 { return prm[po.dtb + h]; }                  // dt_bias [H]
fn b_normw(n: u32) -> f32 { return prm[po.bn + n]; }                      // B_norm.weight [N]
fn c_normw(n: u32) -> f32 { return prm[po.cn + n]; }                      // C_norm.weight [N]
fn raw_dt(r: u32, h: u32) -> f32 { return raw[p.dt_off + r * p.dt_str + h]; }
fn raw_da(r: u32, h: u32) -> f32 { return raw[p.da_off + r * p.da_str + h]; }
fn raw_trap(r: u32, h: u32) -> f32 { return raw[p.tr_off + r * p.tr_str + h]; }
fn raw_angle(r: u32, i: u32) -> f32 { return raw[p.an_off + r * p.an_str + i]; }

//#include "lib/mamba3_prep.wgsl"

fn k_bias(h: u32, rk: u32, n: u32) -> f32 { return prm[po.bb + (h * p.R + rk) * p.N + n]; }  // B_bias [H, N]
fn q_bias(h: u32, rk: u32, n: u32) -> f32 { return prm[po.cb + (h * p.R + rk) * p.N + n]; }  // C_bias
fn theta(b: u32, i: u32) -> f32 { return prep_value(b, 4u * p.H + i); }

fn head_step(b: u32, h: u32) -> HeadStep {
  var t: HeadStep;
  t.dt = prep_value(b, h);
  t.alpha = prep_value(b, p.H + h);
  t.beta = prep_value(b, 2u * p.H + h);
  t.gamma = prep_value(b, 3u * p.H + h);
  t.Dh = prm[po.d + h];                       // D [H]
  return t;
}

@compute @workgroup_size(256)
fn mamba3_step_lanes_folded(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
  if (wid.x >= p.H || wid.y >= p.nb) { return; }   // uniform: depends on the workgroup only
  lanes_step(wid.x, wid.y, lid);
}

// kq [Bsz, H, KQ], KQ = 3N + 4: k [0, N) | k_prev [N, 2N) | q [2N, 3N) | alpha, beta, gamma, D
@group(0) @binding(2) var<storage, read_write> kq: array<f32>;

fn kq_base(b: u32, h: u32) -> u32 { return (b * p.H + h) * (3u * p.N + 4u); }

@compute @workgroup_size(256)
fn mamba3_step_head(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  if (wid.x >= p.H || wid.y >= p.nb) { return; }   // uniform: depends on the workgroup only
  let h = wid.x;
  let b = wid.y;
  let t = head_step(b, h);
  siso_prologue(b, h, h / (p.H / p.G), t.dt, lid);
  let o = kq_base(b, h);
  for (var e = lid; e < 3u * p.N; e += 256u) { kq[o + e] = sh[e]; }
  if (lid == 0u) {
    kq[o + 3u * p.N] = t.alpha;
    kq[o + 3u * p.N + 1u] = t.beta;
    kq[o + 3u * p.N + 2u] = t.gamma;
    kq[o + 3u * p.N + 3u] = t.Dh;
  }
}

// RPW rows of one head a workgroup: row blk * RPW + slot, lane l of it taking n = l, l + LANES, ..
// (states MAXJ a round, loaded before the prologue's values are waited for); y's sum over n as
// lanes_step's (n ascending a lane, then the same tree).
struct Rows { h: u32, blk: u32, pp: u32, live: bool };

fn rows_of_workgroup(wid: vec3<u32>, lid: u32) -> Rows {
  let blocks = (p.P + RPW - 1u) / RPW;
  var r: Rows;
  r.h = wid.x / blocks;
  r.blk = wid.x % blocks;
  r.pp = r.blk * RPW + lid / LANES;
  r.live = r.pp < p.P;
  return r;
}

// The first round's states of a lane's row (MAXJ, 0 past N).
fn first_states(bh: u32, r: Rows, lane: u32) -> array<f32, 4> {
  var hs: array<f32, 4>;
  if (r.live) {
    for (var jj = 0u; jj < MAXJ; jj++) {
      let n = jj * LANES + lane;
      if (n < p.N) { hs[jj] = s_ssm[(bh * p.P + r.pp) * p.N + n]; }
    }
  }
  return hs;
}

// The rows' update once sh holds k [0, N) | k_prev [N, 2N) | q [2N, 3N) (a barrier before);
// t: the head's alpha, beta, gamma and D.
fn rows_update(b: u32, r: Rows, lid: u32, hs0: array<f32, 4>, xv: f32, vv: f32, t: HeadStep) {
  let N = p.N;
  let P = p.P;
  let bh = b * p.H + r.h;
  let lane = lid % LANES;
  let J = (N + LANES - 1u) / LANES;        // states a lane walks in its row
  let bv = t.beta * vv;
  let gv = t.gamma * xv;
  var acc = 0.0;
  for (var j0 = 0u; j0 < J; j0 += MAXJ) {
    if (r.live) {
      let base = (bh * P + r.pp) * N;
      for (var jj = 0u; jj < MAXJ; jj++) {
        let n = (j0 + jj) * LANES + lane;
        if (n < N) {
          var hv = hs0[jj];
          if (j0 > 0u) { hv = s_ssm[base + n]; }
          let s = t.alpha * hv + (bv * sh[N + n] + gv * sh[n]);
          s_ssm[base + n] = s;
          acc += s * sh[2u * N + n];
        }
      }
    }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var st = LANES / 2u; st > 0u; st >>= 1u) {
    if (lane < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  if (lane == 0u && r.live) {
    s_v[bh * P + r.pp] = xv;
    y[p.y_off + b * p.y_str + r.h * P + r.pp] = red[lid] + t.Dh * xv;
  }
}

fn x_of(b: u32, r: Rows) -> f32 {
  if (!r.live) { return 0.0; }
  return x_val(p.x_off + b * p.x_str + r.h * p.P + r.pp);
}

fn v_of(b: u32, r: Rows) -> f32 {
  if (!r.live) { return 0.0; }
  return s_v[(b * p.H + r.h) * p.P + r.pp];
}

@compute @workgroup_size(256)
fn mamba3_step_rows(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  if (wid.x >= p.H * ((p.P + RPW - 1u) / RPW) || wid.y >= p.nb) { return; }   // uniform
  let b = wid.y;
  let r = rows_of_workgroup(wid, lid);
  let hs = first_states(b * p.H + r.h, r, lid % LANES);
  let xv = x_of(b, r);
  let vv = v_of(b, r);
  let o = kq_base(b, r.h);
  for (var e = lid; e < 3u * p.N; e += 256u) { sh[e] = kq[o + e]; }
  var t: HeadStep;
  t.alpha = kq[o + 3u * p.N];
  t.beta = kq[o + 3u * p.N + 1u];
  t.gamma = kq[o + 3u * p.N + 2u];
  t.Dh = kq[o + 3u * p.N + 3u];
  workgroupBarrier();
  rows_update(b, r, lid, hs, xv, vv, t);
}

// arrived [Bsz, H]: the workgroups of a head that have read the old k and angles this dispatch
// (0 between dispatches: the last to arrive sets it back)
@group(0) @binding(3) var<storage, read_write> arrived: array<atomic<u32>>;
var<workgroup> last_to_arrive: u32;

@compute @workgroup_size(256)
fn mamba3_step_rows_last(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let blocks = (p.P + RPW - 1u) / RPW;
  if (wid.x >= p.H * blocks || wid.y >= p.nb) { return; }   // uniform
  let b = wid.y;
  let r = rows_of_workgroup(wid, lid);
  let bh = b * p.H + r.h;
  let hs = first_states(bh, r, lid % LANES);
  let xv = x_of(b, r);
  let vv = v_of(b, r);
  let t = head_step(b, r.h);
  siso_prologue_read_only(b, r.h, r.h / (p.H / p.G), t.dt, lid);
  // the old k and angles are in sh now (a barrier above): this workgroup has read them.
  // WGSL's atomics are relaxed, so the memory model does not itself order those reads before
  // the last arriver's writes; what does: the loaded values were stored to sh before the
  // barrier that precedes this atomicAdd (a load cannot return after its value was used), and
  // the writes below depend on the atomic's result (they cannot be issued before it).
  if (lid == 0u) {
    let before = atomicAdd(&arrived[bh], 1u);
    last_to_arrive = select(0u, 1u, before + 1u == blocks);
    if (before + 1u == blocks) { atomicStore(&arrived[bh], 0u); }
  }
  workgroupBarrier();
  if (last_to_arrive == 1u) { write_k_angles(b, r.h, lid, 256u); }
  rows_update(b, r, lid, hs, xv, vv, t);
}
