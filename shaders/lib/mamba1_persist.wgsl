// A whole Mamba-1 (or Falcon-Mamba) decode layer in ONE dispatch, one token (M = 1): the
// layer's four dependent steps -- the pre-norm, in_proj and the conv step; x_proj; dt_proj,
// the scan step and the gate; out_proj into the residual -- are phases of one kernel whose G
// workgroups stay resident and wait for each phase's inputs inside it, where the engine's
// decode takes one dispatch for each (py_engine/ops/mamba1_persist.py; the engine's path is
// nn/mamba1.Mamba1Mixer.step). How a phase waits without a grid barrier (WGSL has none, nor a
// device-scope fence) is tools/bench_chain's: every value passed between phases is a word of
// the scratch buffer `sc`, zeroed before the token (a copy command, models/mamba.py), stored
// by its producer with atomicStore (+0.0 as -0.0: no value is the zero word) and spun on by
// its consumers with atomicLoad until it is not zero -- only the per-location coherence of
// atomics is relied on. A count of each phase's passes done tells thread 0 when to start
// reading, so that a workgroup does not poll words not yet written.
//
// Forward progress without a promise that all G workgroups are resident at once (WebGPU makes
// none): a phase's passes are cut into at most G blocks, and a block is processed by whichever
// workgroup takes its flag first (atomicExchange) -- workgroup g tries block g first (its first
// weights already loading), then any block not yet taken. A workgroup waits for a phase only
// after every block of the phase before was taken, so it waits only on workgroups that are
// running a block, which wait on nothing: with fewer resident than G, the resident ones do all
// the work and the rest find none (slower, still right). Every spin is bounded all the same
// (p.spin rounds) and a thread that gives up adds one to the fails word (ops/mamba1_persist's
// `fails`; the token is then wrong). On lavapipe a spin pass also
// counts against the driver's 65,535 loop passes an invocation (shaders/LOOP_BUDGET.md):
// there this path is for tiny models (the tests).
//
// The including file (mamba1_persist_<format>.wgsl) includes lib/mamba1_persist_weights.wgsl
// (the matrices at bindings 3..8, `Raw`, load_m, load_word) and defines, before this include:
//   const CV: u32      vec4s of x per 16-byte chunk of weights (f32 1, f16 2, q8 4, q4 8)
//   fn raw_dot(q: Raw, c: u32) -> f32    its values (unscaled) dotted with xs[c * CV ..]
//   fn chunk_scale(m: u32, row: u32, c: u32) -> f32   their scale (1 when unscaled; q8 the
//                                        row's, q4 the chunk's group of 32), read from the
//                                        words after matrix m's data (mat_rows, mat_k below)

struct Params {
  D: u32, I: u32, R: u32, N: u32,          // d_model, inner channels, dt rank, state size
  flags: u32, spin: u32, eps: f32, bc_eps: f32,   // bit0 conv bias, bit1 Falcon's B/C/dt norm
  conv_off: u32, ssm_off: u32, fail_at: u32, _p: u32,  // in st: conv [I, 4], ssm [I, N]; sc's fails word
};
// The scratch words of the layer (offsets in sc): u [I], z [I], xp [R + 2N], y [I], then for
// each phase ph < 4: the passes done, the blocks taken, and a flag a block [G].
fn U0() -> u32 { return 0u; }
fn Z0() -> u32 { return p.I; }
fn XP0() -> u32 { return 2u * p.I; }
fn Y0() -> u32 { return 2u * p.I + p.R + 2u * p.N; }
fn PH0(ph: u32, G: u32) -> u32 { return 3u * p.I + p.R + 2u * p.N + ph * (2u + G); }
fn DONE(ph: u32, G: u32) -> u32 { return PH0(ph, G); }
fn TAKEN(ph: u32, G: u32) -> u32 { return PH0(ph, G) + 1u; }
fn FLAG(ph: u32, G: u32, b: u32) -> u32 { return PH0(ph, G) + 2u + b; }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> res: array<f32>;       // [D] residual, += out_proj
@group(0) @binding(2) var<storage, read> nw: array<vec4<f32>>;        // [D/4] the pre-norm's weight
@group(0) @binding(9) var<storage, read> conv_w: array<f32>;          // [I, 4]
@group(0) @binding(10) var<storage, read> conv_b: array<f32>;         // [I] (flags bit0)
@group(0) @binding(11) var<storage, read_write> st: array<f32>;       // conv [I, 4], ssm [I, N]
@group(0) @binding(12) var<storage, read> dt_w: array<f32>;           // [I, R]
@group(0) @binding(13) var<storage, read> dt_b: array<f32>;           // [I]
@group(0) @binding(14) var<storage, read> a_log: array<f32>;          // [I, N]
@group(0) @binding(15) var<storage, read> dskip: array<f32>;          // [I]
@group(0) @binding(16) var<storage, read_write> sc: array<atomic<u32>>;  // scratch words (above)

//#include "lib/activations.wgsl"
//#include "lib/group_sum.wgsl"
//#include "lib/spin_words.wgsl"

const THREADS = 256u;
// Threads a weight row (a power of two, 4..256): a pass of a workgroup covers THREADS / TPR rows.
override TPR: u32 = 64u;
// The sums' tree steps below the subgroup size as subgroup shuffles, else workgroup memory.
override SG: bool = true;
const LANES = 16u;                           // threads a channel in the scan phase (a state each)

var<workgroup> xs: array<vec4<f32>, 1024>;   // a phase's input: the normalised h (D), u or y (I)
var<workgroup> red: array<f32, THREADS>;
var<workgroup> xq: array<f32, 512>;          // x_proj's outputs: dt_low [R], B [N], C [N]
var<workgroup> wsum: f32;                    // the residual's sum of squares
var<workgroup> nq: array<f32, 4>;            // Falcon: 1/rms of dt_low, B, C
var<workgroup> dts: array<f32, 16>;          // the scan pass's channels' dt (THREADS / LANES)
var<private> failed: bool;                   // this thread gave up a spin: spin no more

fn give_up() {
  failed = true;
  atomicAdd(&sc[p.fail_at], 1u);
}

// Thread 0's wait for a phase's count: p.spin rounds of 256 loads, written out rather than
// looped -- lavapipe counts every loop pass against its cap (header), so a round there costs
// one pass, and its waits, milliseconds long when the OS puts a thread aside, fit.
fn count8(i: u32, np: u32, k0: u32) -> u32 {
  var k = k0;
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  if (k < np) { k = atomicLoad(&sc[i]); }
  return k;
}

fn count64(i: u32, np: u32, k0: u32) -> u32 {
  let k = count8(i, np, count8(i, np, count8(i, np, count8(i, np, k0))));
  return count8(i, np, count8(i, np, count8(i, np, count8(i, np, k))));
}

var<workgroup> wfailed: u32;

// Thread 0 waits until all np passes of phase ph are done; then the workgroup reads. If thread
// 0 gave up, no thread of the workgroup spins again (the token is wrong already; 256 threads
// each spinning out its bound took minutes on lavapipe).
fn wait_phase(ph: u32, G: u32, np: u32, lid: u32) {
  if (lid == 0u) {
    var n = 0u;
    var k = atomicLoad(&sc[DONE(ph, G)]);
    while (k < np && !failed) {
      n++;
      if (n >= p.spin) { give_up(); }
      k = count64(DONE(ph, G), np, count64(DONE(ph, G), np, count64(DONE(ph, G), np,
                  count64(DONE(ph, G), np, k))));
    }
    wfailed = select(0u, 1u, failed);
  }
  workgroupBarrier();
  if (wfailed == 1u) { failed = true; }
}

fn finish_block(ph: u32, G: u32, passes: u32, lid: u32) {
  workgroupBarrier();                        // every thread's stores issued
  if (lid == 0u) { atomicAdd(&sc[DONE(ph, G)], passes); }
}

// A phase of np passes in blocks of `per` passes (at most G blocks: nb).
struct Blocks { np: u32, per: u32, nb: u32 };

fn blocks_of(np: u32, G: u32) -> Blocks {
  var o: Blocks;
  o.np = np;
  o.per = max((np + G - 1u) / G, 1u);
  o.nb = (np + o.per - 1u) / o.per;
  return o;
}

var<workgroup> wtake: u32;

// Blocks by a fixed stride instead (workgroup g takes block g, nothing else; no flags): a bench
// variant (MAMBAWEB_PERSIST_STATIC=1) that prices the flags -- it needs every workgroup
// resident, as tools/bench_chain's forms do, and is never the rule.
override STATIC: bool = false;

// The block of phase ph this workgroup takes: `own` if nobody has, else the first one not yet
// taken from `start` on (in turn), else nb (every block taken). Thread 0 decides; uniform.
fn take_block(ph: u32, G: u32, bl: Blocks, own: u32, start: u32, lid: u32) -> u32 {
  if (STATIC) { return select(bl.nb, own, own < bl.nb); }
  if (lid == 0u) {
    var got = bl.nb;
    if (own < bl.nb && atomicExchange(&sc[FLAG(ph, G, own)], 1u) == 0u) {
      got = own;
    } else if (atomicLoad(&sc[TAKEN(ph, G)]) < bl.nb) {
      for (var i = 0u; i < bl.nb; i++) {
        let b = (start + i) % bl.nb;
        if (atomicLoad(&sc[FLAG(ph, G, b)]) == 0u &&
            atomicExchange(&sc[FLAG(ph, G, b)], 1u) == 0u) {
          got = b;
          break;
        }
      }
    }
    if (got < bl.nb) { atomicAdd(&sc[TAKEN(ph, G)], 1u); }
    wtake = got;
  }
  return workgroupUniformLoad(&wtake);
}

// Matrix m's rows and inputs (the formats' scales sit after rows x K values of data).
fn mat_rows(m: u32) -> u32 {
  switch m {
    case 0u, 1u: { return p.I; }
    case 2u: { return p.R; }
    case 3u, 4u: { return p.N; }
    default: { return p.D; }
  }
}

fn mat_k(m: u32) -> u32 { return select(p.I, p.D, m < 2u); }

// Weight rows: phase ph's row r is row `row` of matrix `m`.
struct Row { m: u32, row: u32 };

fn row_of(ph: u32, r: u32) -> Row {
  var o: Row;
  if (ph == 0u) {                            // in_proj: x half, then z half
    o.m = select(1u, 0u, r < p.I);
    o.row = select(r - p.I, r, r < p.I);
  } else if (ph == 1u) {                     // x_proj: dt, B, C
    if (r < p.R) { o.m = 2u; o.row = r; }
    else if (r < p.R + p.N) { o.m = 3u; o.row = r - p.R; }
    else { o.m = 4u; o.row = r - p.R - p.N; }
  } else {                                   // out_proj
    o.m = 5u;
    o.row = r;
  }
  return o;
}

// Four chunks of the row and their scales (clamped into it; the caller drops those past its
// end), loaded before any is used.
struct Trip { a: Raw, b: Raw, c: Raw, d: Raw, s: vec4<f32> };

fn load_trip(w: Row, nchunk: u32, c: u32) -> Trip {
  let base = w.row * nchunk;
  let c0 = min(c, nchunk - 1u);
  let c1 = min(c + TPR, nchunk - 1u);
  let c2 = min(c + 2u * TPR, nchunk - 1u);
  let c3 = min(c + 3u * TPR, nchunk - 1u);
  var t: Trip;
  t.a = load_m(w.m, base + c0);
  t.b = load_m(w.m, base + c1);
  t.c = load_m(w.m, base + c2);
  t.d = load_m(w.m, base + c3);
  t.s = vec4<f32>(chunk_scale(w.m, w.row, c0), chunk_scale(w.m, w.row, c1),
                  chunk_scale(w.m, w.row, c2), chunk_scale(w.m, w.row, c3));
  return t;
}

fn chunk_sum(q: Raw, sc: f32, c: u32, nchunk: u32) -> f32 {
  return select(0.0, raw_dot(q, min(c, nchunk - 1u)) * sc, c < nchunk);
}

// Passes ps0 .. ps1 - 1 of phase ph's rows (nrows of K inputs, xs staged), THREADS / TPR rows
// a pass; `first` is the thread's first trip, loaded before xs was. Lane 0 of each row's
// threads calls emit(ph, r, total * scale).
fn run_rows(ph: u32, nrows: u32, K: u32, ps0: u32, ps1: u32, lid: u32, sg: u32, first: Trip,
            scale: f32) {
  let nchunk = K / (4u * CV);
  let rpw = THREADS / TPR;
  let lane = lid % TPR;
  let slot = lid / TPR;
  let span = 4u * TPR;
  let trips = (nchunk + span - 1u) / span;
  var q = first;
  for (var ps = ps0; ps < ps1; ps++) {
    let r = ps * rpw + slot;
    let w = row_of(ph, min(r, nrows - 1u));
    var acc = 0.0;
    for (var t = 0u; t < trips; t++) {
      let c = lane + span * t;
      var nxt: Trip;
      if (t + 1u < trips) {
        nxt = load_trip(w, nchunk, c + span);
      } else {                               // the next pass's first trip
        nxt = load_trip(row_of(ph, min((ps + 1u) * rpw + slot, nrows - 1u)), nchunk, lane);
      }
      acc += chunk_sum(q.a, q.s.x, c, nchunk) + chunk_sum(q.b, q.s.y, c + TPR, nchunk) +
             chunk_sum(q.c, q.s.z, c + 2u * TPR, nchunk) +
             chunk_sum(q.d, q.s.w, c + 3u * TPR, nchunk);
      q = nxt;
    }
    let total = group_sum(acc, lid, TPR, sg) * scale;
    if (lane == 0u && r < nrows) { emit(ph, r, total); }
  }
}

// The thread's first trip of pass ps.
fn first_trip(ph: u32, nrows: u32, K: u32, ps: u32, lid: u32) -> Trip {
  let r = min(ps * (THREADS / TPR) + lid / TPR, nrows - 1u);
  return load_trip(row_of(ph, r), K / (4u * CV), lid % TPR);
}

// Phase 0, a row of in_proj: x rows through the conv step (state shifted in place, as
// conv1d_step: bias, then taps 0..3) into u; z rows into z.
fn emit(ph: u32, r: u32, v: f32) {
  if (ph == 0u) {
    if (r >= p.I) { put(Z0() + r - p.I, v); return; }
    let s = p.conv_off + r * 4u;
    let s1 = st[s + 1u];
    let s2 = st[s + 2u];
    let s3 = st[s + 3u];
    st[s] = s1;
    st[s + 1u] = s2;
    st[s + 2u] = s3;
    st[s + 3u] = v;
    var acc = 0.0;
    if ((p.flags & 1u) != 0u) { acc = conv_b[r]; }
    acc += s1 * conv_w[r * 4u];
    acc += s2 * conv_w[r * 4u + 1u];
    acc += s3 * conv_w[r * 4u + 2u];
    acc += v * conv_w[r * 4u + 3u];
    put(U0() + r, silu(acc));
  } else if (ph == 1u) {
    put(XP0() + r, v);
  } else {
    res[r] += v;
  }
}

// Phase 2: channel i's dt (dt_proj over dt_low, + bias, softplus), its N states stepped
// (lane n: state n), y_i = (C . h + D u_i) * silu(z_i): the engine's scan step
// (lib/selective_scan_step_body.wgsl) in its order, a channel per LANES threads. xq holds
// x_proj's outputs; Falcon's 1/rms of dt_low, B and C are in nq.
fn scan_channels(ps0: u32, ps1: u32, lid: u32, sg: u32) {
  let lane = lid % LANES;
  let cpw = THREADS / LANES;
  let falcon = (p.flags & 2u) != 0u;
  for (var ps = ps0; ps < ps1; ps++) {
    let i = ps * cpw + lid / LANES;
    let ok = i < p.I;
    let ic = min(i, p.I - 1u);
    // dt_proj: the lane's terms k = lane, lane + LANES, .. eight loaded before any is added
    // (a loop that loads and then adds waits a memory latency a term), added in k order
    var x = 0.0;
    let wr = ic * p.R;
    let last = p.R - 1u;
    for (var k = lane; k < p.R; k += 8u * LANES) {
      let w0 = dt_w[wr + k];
      let w1 = dt_w[wr + min(k + LANES, last)];
      let w2 = dt_w[wr + min(k + 2u * LANES, last)];
      let w3 = dt_w[wr + min(k + 3u * LANES, last)];
      let w4 = dt_w[wr + min(k + 4u * LANES, last)];
      let w5 = dt_w[wr + min(k + 5u * LANES, last)];
      let w6 = dt_w[wr + min(k + 6u * LANES, last)];
      let w7 = dt_w[wr + min(k + 7u * LANES, last)];
      x += xq[k] * w0;
      if (k + LANES < p.R) { x += xq[k + LANES] * w1; }
      if (k + 2u * LANES < p.R) { x += xq[k + 2u * LANES] * w2; }
      if (k + 3u * LANES < p.R) { x += xq[k + 3u * LANES] * w3; }
      if (k + 4u * LANES < p.R) { x += xq[k + 4u * LANES] * w4; }
      if (k + 5u * LANES < p.R) { x += xq[k + 5u * LANES] * w5; }
      if (k + 6u * LANES < p.R) { x += xq[k + 6u * LANES] * w6; }
      if (k + 7u * LANES < p.R) { x += xq[k + 7u * LANES] * w7; }
    }
    x = group_sum(x, lid, LANES, sg);        // in the channel's lane 0
    if (lane == 0u) {
      if (falcon) { x *= nq[0]; }
      dts[lid / LANES] = softplus(x + dt_b[ic]);
    }
    workgroupBarrier();
    let dt = dts[lid / LANES];
    let uu = settle(U0() + ic, atomicLoad(&sc[U0() + ic]));
    let zw = atomicLoad(&sc[Z0() + ic]);      // loaded with u: both in flight at once
    var acc = 0.0;
    if (ok && lane < p.N) {
      let hi = p.ssm_off + ic * p.N + lane;
      var sb = 1.0;
      var sc_ = 1.0;
      if (falcon) { sb = nq[1]; sc_ = nq[2]; }
      let a = -exp(a_log[ic * p.N + lane]);
      let dbu = dt * uu;
      let h = exp(dt * a) * st[hi] + dbu * xq[p.R + lane] * sb;
      st[hi] = h;
      acc = xq[p.R + p.N + lane] * sc_ * h;
    }
    let tot = group_sum(acc, lid, LANES, sg);
    if (ok && lane == 0u) {
      put(Y0() + i, (tot + dskip[ic] * uu) * silu(settle(Z0() + ic, zw)));
    }
    workgroupBarrier();                      // dts is written again by the next pass
  }
}

// x_proj's R + 2N outputs into xq; with Falcon's norm, 1/rms of dt_low, B and C into nq.
fn stage_xproj(lid: u32) {
  for (var k = lid; k < p.R + 2u * p.N; k += THREADS) {
    xq[k] = settle(XP0() + k, atomicLoad(&sc[XP0() + k]));
  }
  workgroupBarrier();
  if ((p.flags & 2u) != 0u && lid < 3u) {
    var n0 = 0u;
    var cnt = p.R;
    if (lid > 0u) { n0 = p.R + (lid - 1u) * p.N; cnt = p.N; }
    var s = 0.0;
    for (var k = 0u; k < cnt; k++) { let v = xq[n0 + k]; s += v * v; }
    nq[lid] = inverseSqrt(s / f32(cnt) + p.bc_eps);
  }
  workgroupBarrier();
}

// Row kinds of run_rows / row_of / emit.
const RK_IN = 0u;
const RK_XP = 1u;
const RK_OUT = 2u;

// Phase 0: in_proj's rows over h = residual * norm weight (its 1/rms scales the sums), the x
// half through the conv step into u, the z half into z; h staged by the workgroup's first
// block -- a workgroup that takes none reads nothing of the residual, so phase 3's writes into
// it come after every read (through the rows' outputs).
fn phase_in(G: u32, g0: u32, lid: u32, sg: u32) {
  let nrows = 2u * p.I;
  let bl = blocks_of((nrows + THREADS / TPR - 1u) / (THREADS / TPR), G);
  var q = first_trip(RK_IN, nrows, p.D, min(g0 * bl.per, bl.np - 1u), lid);
  var b = take_block(0u, G, bl, g0, g0 + 1u, lid);
  var rstd = 0.0;
  var staged = false;
  while (b < bl.nb) {
    if (b != g0) { q = first_trip(RK_IN, nrows, p.D, b * bl.per, lid); }
    if (!staged) {
      var ss = 0.0;
      for (var k = lid; k < p.D / 4u; k += THREADS) {
        let v = vec4<f32>(res[4u * k], res[4u * k + 1u], res[4u * k + 2u], res[4u * k + 3u]);
        ss += dot(v, v);
        xs[k] = v * nw[k];
      }
      ss = group_sum(ss, lid, THREADS, sg);
      if (lid == 0u) { wsum = ss; }
      workgroupBarrier();
      rstd = inverseSqrt(wsum / f32(p.D) + p.eps);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    run_rows(RK_IN, nrows, p.D, b * bl.per, ps1, lid, sg, q, rstd);
    finish_block(0u, G, ps1 - b * bl.per, lid);
    b = take_block(0u, G, bl, bl.nb, b + 1u, lid);
  }
}

// Phase 1 (x_proj over u) or 3 (out_proj over y, into the residual): the input staged, once
// phase ph - 1's wait_np passes are done, by the workgroup's first block.
fn phase_rows(ph: u32, kind: u32, nrows: u32, in0: u32, G: u32, g0: u32, lid: u32, sg: u32,
              wait_np: u32) {
  let bl = blocks_of((nrows + THREADS / TPR - 1u) / (THREADS / TPR), G);
  var q = first_trip(kind, nrows, p.I, min(g0 * bl.per, bl.np - 1u), lid);
  var b = take_block(ph, G, bl, g0, g0 + 1u, lid);
  var staged = false;
  while (b < bl.nb) {
    if (b != g0) { q = first_trip(kind, nrows, p.I, b * bl.per, lid); }
    if (!staged) {
      wait_phase(ph - 1u, G, wait_np, lid);
      stage_words(in0, p.I, lid, THREADS);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    run_rows(kind, nrows, p.I, b * bl.per, ps1, lid, sg, q, 1.0);
    finish_block(ph, G, ps1 - b * bl.per, lid);
    b = take_block(ph, G, bl, bl.nb, b + 1u, lid);
  }
}

// Phase 2: dt_proj, the scan step and the gate into y; x_proj's outputs staged, once phase 1's
// wait_np passes are done, by the workgroup's first block.
fn phase_scan(G: u32, g0: u32, lid: u32, sg: u32, wait_np: u32) {
  let bl = blocks_of((p.I + THREADS / LANES - 1u) / (THREADS / LANES), G);
  var b = take_block(2u, G, bl, g0, g0 + 1u, lid);
  var staged = false;
  while (b < bl.nb) {
    if (!staged) {
      wait_phase(1u, G, wait_np, lid);
      stage_xproj(lid);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    scan_channels(b * bl.per, ps1, lid, sg);
    finish_block(2u, G, ps1 - b * bl.per, lid);
    b = take_block(2u, G, bl, bl.nb, b + 1u, lid);
  }
}

@compute @workgroup_size(THREADS)
fn mamba1_persist(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  failed = false;
  let g0 = wg.x;
  let G = nwg.x;
  let rpw = THREADS / TPR;
  let np_in = (2u * p.I + rpw - 1u) / rpw;
  let np_xp = (p.R + 2u * p.N + rpw - 1u) / rpw;
  let np_scan = (p.I + THREADS / LANES - 1u) / (THREADS / LANES);
  phase_in(G, g0, lid, sg);                                          // -> u, z
  phase_rows(1u, RK_XP, p.R + 2u * p.N, U0(), G, g0, lid, sg, np_in);    // x_proj -> xp
  phase_scan(G, g0, lid, sg, np_xp);                                 // dt_proj, scan, gate -> y
  phase_rows(3u, RK_OUT, p.D, Y0(), G, g0, lid, sg, np_scan);        // out_proj -> residual
}
