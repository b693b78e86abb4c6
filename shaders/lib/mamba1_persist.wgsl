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
// (the matrices at bindings 3..8, `Raw`, load_quad) and defines, before this include:
//   const CV: u32      vec4s of x per 16-byte chunk of weights (f32 1, f16 2, q8 4, q4 8)
//   fn raw_dot(q: Raw, c: u32) -> f32    its values (unscaled) dotted with chunk c's inputs,
//                                        xv(c, i) for i < CV
//   const SCALED: bool                   whether chunks have scales (q8 the row's, q4 each
//                                        chunk's group of 32), words after matrix m's data
//                                        (mat_rows, mat_k below)
//   fn scale_words(m: u32, row: u32, c: vec4<u32>) -> vec4<u32>   the words holding chunks
//                                        c.x .. c.w's scales (loaded with the chunks)
//   fn scales_of(sw: vec4<u32>, m: u32, row: u32, c: vec4<u32>) -> vec4<f32>   the scales in
//                                        them (1 when unscaled)
//
// How the rows run (the engine's tuned mat-vec's habits, lib/matvec_rows.wgsl): TPR threads a
// row, a value per phase (in_proj's tall rows few threads, x_proj's 160 rows the whole
// workgroup); each thread four 16-byte loads in flight (a trip) and the next trip loading while
// it sums one; the staged input chunk-interleaved (vec4 i of chunk c at xs[i * XSC + c]: the
// lanes of a row read consecutive vec4s, no bank conflicts for the narrow formats); the sums
// below the subgroup size as shuffles. What a row's result is added to or stored with (the conv
// taps and state, the residual) is loaded before the row's sums, by one thread a row, and the
// results are stored once a sub-block of up to THREADS rows is summed: no memory wait between
// passes (the first version waited on the conv state in every pass: 5.99 ms a token at 1.4b f16
// on an H200, against 1.60 for the engine's dispatches).

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
// Threads a weight row per phase (powers of two, 4..256; a pass of a workgroup covers
// THREADS / TPR rows): in_proj's, x_proj's and out_proj's.
override TPR_IN: u32 = 16u;
override TPR_XP: u32 = 256u;
override TPR_OUT: u32 = 64u;
// The sums' tree steps below the subgroup size as subgroup shuffles, else workgroup memory.
override SG: bool = true;
const LANES = 16u;                           // threads a channel in the scan phase (a state each)
const XS = 1024u;                            // vec4s of staged input (D, I <= 4096)
const XSC = XS / CV;                         // chunks of it

var<workgroup> xs: array<vec4<f32>, XS>;     // a phase's input: the normalised h (D), u or y (I)
var<workgroup> red: array<f32, THREADS>;
// The scan phase: x_proj's outputs dt_low [R], B [N], C [N]. The row phases: a sub-block's row
// sums (at most THREADS).
var<workgroup> xq: array<f32, 512>;
var<workgroup> wsum: f32;                    // the residual's sum of squares
var<workgroup> nq: array<f32, 4>;            // Falcon: 1/rms of dt_low, B, C
var<workgroup> dts: array<f32, 16>;          // the scan pass's channels' dt (THREADS / LANES)
var<private> failed: bool;                   // this thread gave up a spin: spin no more

// Vec4 i < CV of chunk c of the staged input, and where vec4 v of the input is staged.
fn xv(c: u32, i: u32) -> vec4<f32> { return xs[i * XSC + c]; }
fn xs_slot(v: u32) -> u32 { return (v % CV) * XSC + v / CV; }

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

// Whether the count is polled in rounds of 256 written-out loads (lavapipe's loop-pass cap,
// above) or one load a loop pass (a GPU: on the H200 the written-out rounds made mamba-130m's
// out_proj phase, 192 workgroups polling one word, cost 26 us a layer -- by our reading their
// loads issued together and queued at that word ahead of the adds they wait for).
override WRITTEN_OUT: bool = true;

// Thread 0 waits until all np passes of phase ph are done; then the workgroup reads. If thread
// 0 gave up, no thread of the workgroup spins again (the token is wrong already; 256 threads
// each spinning out its bound took minutes on lavapipe).
fn wait_phase(ph: u32, G: u32, np: u32, lid: u32) {
  if (!COUNT) { return; }                    // each thread spins on its own words instead
  if (lid == 0u) {
    var n = 0u;
    var k = atomicLoad(&sc[DONE(ph, G)]);
    while (k < np && !failed) {
      n++;
      if (WRITTEN_OUT) {
        if (n >= p.spin) { give_up(); }
        k = count64(DONE(ph, G), np, count64(DONE(ph, G), np, count64(DONE(ph, G), np,
                    count64(DONE(ph, G), np, k))));
      } else {
        if (n >= 256u * p.spin) { give_up(); }
        k = atomicLoad(&sc[DONE(ph, G)]);
      }
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
var<workgroup> wfree: atomic<u32>;

// Blocks by a fixed stride instead (workgroup g takes block g, nothing else; no flags): a bench
// variant (MAMBAWEB_PERSIST_STATIC=1) that prices the flags -- it needs every workgroup
// resident, as tools/bench_chain's forms do, and is never the rule.
override STATIC: bool = false;

// Whether thread 0 waits for the count of a phase's passes before the workgroup reads its
// words (else every thread spins on its words from the start: bench_chain's "words" form;
// MAMBAWEB_PERSIST_COUNT). Without it mamba-130m f16 took 0.819 ms a token against 1.145 on the
// H200 through Dawn, the count then polled in written-out rounds (WRITTEN_OUT); kept on by rule
// because the GPU's device checks ran with it, and lavapipe's loop cap needs it.
override COUNT: bool = true;

// The last phase run (a bench ablation, MAMBAWEB_PERSIST_LAST: the layer is then WRONG -- what
// each phase adds to a token's time, phases 0..LAST of every layer timed; 3, all, the rule).
override LAST: u32 = 3u;

// Whether x_proj's and out_proj's phases load a second trip of their own block before waiting
// for the phase before (out_proj's rows at 1.4b are two trips a thread: all its bytes then
// move while the latency-bound phases before it run), at eight 16-byte registers a thread.
override AHEAD: bool = false;

// The block of phase ph this workgroup takes (uniform): `own` if nobody has, else one not yet
// taken, else nb (every block taken). Looking for one, the workgroup's threads load every
// block's flag at once (one memory wait, where a loop of thread 0 waited a load a flag) and
// thread 0 tries the first free one from `start` on (so that workgroups looking at once
// try different ones); lost to another workgroup, it looks again.
fn take_block(ph: u32, G: u32, bl: Blocks, own: u32, start: u32, lid: u32) -> u32 {
  if (STATIC) { return select(bl.nb, own, own < bl.nb); }
  if (lid == 0u) {
    var got = bl.nb;                         // look for one
    if (own < bl.nb && atomicExchange(&sc[FLAG(ph, G, own)], 1u) == 0u) {
      got = own;
      atomicAdd(&sc[TAKEN(ph, G)], 1u);
    } else if (atomicLoad(&sc[TAKEN(ph, G)]) >= bl.nb) {
      got = bl.nb + 1u;                      // none left
    }
    wtake = got;
  }
  var got = workgroupUniformLoad(&wtake);
  for (var round = 0u; got == bl.nb && round <= bl.nb; round++) {
    if (lid == 0u) { atomicStore(&wfree, bl.nb); }
    workgroupBarrier();
    for (var b = lid; b < bl.nb; b += THREADS) {
      if (atomicLoad(&sc[FLAG(ph, G, b)]) == 0u) { atomicMin(&wfree, (b + bl.nb - start % bl.nb) % bl.nb); }
    }
    workgroupBarrier();
    if (lid == 0u) {
      let key = atomicLoad(&wfree);
      var r = bl.nb + 1u;                    // none free
      if (key < bl.nb) {
        let b = (key + start % bl.nb) % bl.nb;
        r = bl.nb;                           // lost the race: look again
        if (atomicExchange(&sc[FLAG(ph, G, b)], 1u) == 0u) {
          r = b;
          atomicAdd(&sc[TAKEN(ph, G)], 1u);
        }
      }
      wtake = r;
    }
    got = workgroupUniformLoad(&wtake);
  }
  return min(got, bl.nb);
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

// Row kinds: in_proj (x half, then z half), x_proj (dt, B, C), out_proj.
const RK_IN = 0u;
const RK_XP = 1u;
const RK_OUT = 2u;

fn tpr_of(kind: u32) -> u32 {
  switch kind {
    case 0u: { return TPR_IN; }
    case 1u: { return TPR_XP; }
    default: { return TPR_OUT; }
  }
}

// Weight rows: row r of a kind is row `row` of matrix `m`.
struct Row { m: u32, row: u32 };

fn row_of(kind: u32, r: u32) -> Row {
  var o: Row;
  if (kind == RK_IN) {
    o.m = select(1u, 0u, r < p.I);
    o.row = select(r - p.I, r, r < p.I);
  } else if (kind == RK_XP) {
    if (r < p.R) { o.m = 2u; o.row = r; }
    else if (r < p.R + p.N) { o.m = 3u; o.row = r - p.R; }
    else { o.m = 4u; o.row = r - p.R - p.N; }
  } else {
    o.m = 5u;
    o.row = r;
  }
  return o;
}

// Chunks c, c + tpr, c + 2 tpr, c + 3 tpr of a row and their scales (clamped into it; the
// caller drops those past its end), loaded before any is used.
struct Trip { q: Quad, s: vec4<f32> };

fn load_trip(w: Row, nchunk: u32, c: u32, tpr: u32) -> Trip {
  let cc = min(vec4<u32>(c, c + tpr, c + 2u * tpr, c + 3u * tpr), vec4<u32>(nchunk - 1u));
  var t: Trip;
  t.q = load_quad(w.m, vec4<u32>(w.row * nchunk) + cc, scale_words(w.m, w.row, cc));
  t.s = scales_of(t.q.s, w.m, w.row, cc);
  return t;
}

fn chunk_sum(q: Raw, s: f32, c: u32, nchunk: u32) -> f32 {
  return select(0.0, raw_dot(q, min(c, nchunk - 1u)) * s, c < nchunk);
}

// What a row's sum is stored with, loaded before the sums: in_proj's x rows the conv state's
// taps 1..3 and bias (a) and the conv weights (b); out_proj's rows the residual (a.x).
struct Add { a: vec4<f32>, b: vec4<f32> };

fn addends(kind: u32, r: u32) -> Add {
  var o: Add;
  if (kind == RK_IN && r < p.I) {
    let s = p.conv_off + r * 4u;
    var bias = 0.0;
    if ((p.flags & 1u) != 0u) { bias = conv_b[r]; }
    o.a = vec4<f32>(st[s + 1u], st[s + 2u], st[s + 3u], bias);
    o.b = vec4<f32>(conv_w[r * 4u], conv_w[r * 4u + 1u], conv_w[r * 4u + 2u], conv_w[r * 4u + 3u]);
  } else if (kind == RK_OUT) {
    o.a.x = res[r];
  }
  return o;
}

// Row r's sum v stored: in_proj's x rows through the conv step (state shifted in place, as
// conv1d_step: bias, then taps 0..3) into u, its z rows into z; x_proj's into xp; out_proj's
// added to the residual.
fn emit(kind: u32, r: u32, v: f32, ad: Add) {
  if (kind == RK_IN) {
    if (r >= p.I) { put(Z0() + r - p.I, v); return; }
    let s = p.conv_off + r * 4u;
    st[s] = ad.a.x;
    st[s + 1u] = ad.a.y;
    st[s + 2u] = ad.a.z;
    st[s + 3u] = v;
    var acc = ad.a.w;
    acc += ad.a.x * ad.b.x;
    acc += ad.a.y * ad.b.y;
    acc += ad.a.z * ad.b.z;
    acc += v * ad.b.w;
    put(U0() + r, silu(acc));
  } else if (kind == RK_XP) {
    put(XP0() + r, v);
  } else {
    res[r] = ad.a.x + v;
  }
}

// Passes ps0 .. ps1 - 1 of a kind's rows (nrows of K inputs, staged in xs), THREADS / tpr
// rows a pass, in sub-blocks of at most THREADS rows: thread t loads the addends of the
// sub-block's row t, the passes leave the rows' sums (times `scale`) in xq, then thread t
// stores row t. `first` is the thread's first trip, loaded earlier (before the input was
// staged), and with `early` `second` its next (trip_after), loaded then too; a pass's trip is
// summed while the next loads, the last one while the next pass's first loads. Returns the
// trip loaded last (the pass after ps1's).
fn run_rows(kind: u32, nrows: u32, K: u32, ps0: u32, ps1: u32, lid: u32, sg: u32, first: Trip,
            second: Trip, early: bool, scale: f32) -> Trip {
  let tpr = tpr_of(kind);
  let rpw = THREADS / tpr;
  let nchunk = K / (4u * CV);
  let lane = lid % tpr;
  let slot = lid / tpr;
  let span = 4u * tpr;
  let trips = (nchunk + span - 1u) / span;
  var q = first;
  for (var sb = ps0; sb < ps1; sb += tpr) {  // a sub-block: tpr passes, THREADS rows
    let se = min(sb + tpr, ps1);
    let mine = sb * rpw + lid;               // the row this thread stores
    let ad = addends(kind, min(mine, nrows - 1u));
    for (var ps = sb; ps < se; ps++) {
      let w = row_of(kind, pass_row(kind, nrows, ps, lid));
      var acc = 0.0;
      for (var t = 0u; t < trips; t++) {
        let c = lane + span * t;
        var nxt: Trip;
        if (early && ps == ps0 && t == 0u) {
          nxt = second;                      // loaded before the wait
        } else {
          nxt = trip_after(kind, nrows, nchunk, w, ps, t, lid);
        }
        acc += chunk_sum(q.q.a, q.s.x, c, nchunk) + chunk_sum(q.q.b, q.s.y, c + tpr, nchunk) +
               chunk_sum(q.q.c, q.s.z, c + 2u * tpr, nchunk) +
               chunk_sum(q.q.d, q.s.w, c + 3u * tpr, nchunk);
        q = nxt;
      }
      let total = group_sum(acc, lid, tpr, sg);
      if (lane == 0u) { xq[(ps - sb) * rpw + slot] = total * scale; }
    }
    workgroupBarrier();
    if (mine < min(se * rpw, nrows)) { emit(kind, mine, xq[lid], ad); }
    workgroupBarrier();                      // xq is written again
  }
  return q;
}

// The row thread `lid` sums in pass ps of a kind's rows (clamped: a pass past the last row
// computes the last row again and stores nothing).
fn pass_row(kind: u32, nrows: u32, ps: u32, lid: u32) -> u32 {
  let tpr = tpr_of(kind);
  return min(ps * (THREADS / tpr) + lid / tpr, nrows - 1u);
}

// The thread's trip after trip t of pass ps (row w): the pass's next, or the next pass's first.
fn trip_after(kind: u32, nrows: u32, nchunk: u32, w: Row, ps: u32, t: u32, lid: u32) -> Trip {
  let tpr = tpr_of(kind);
  let span = 4u * tpr;
  let lane = lid % tpr;
  if (t + 1u < (nchunk + span - 1u) / span) {
    return load_trip(w, nchunk, lane + span * (t + 1u), tpr);
  }
  return load_trip(row_of(kind, pass_row(kind, nrows, ps + 1u, lid)), nchunk, lane, tpr);
}

// The thread's first trip of pass ps of a kind's rows.
fn first_trip(kind: u32, nrows: u32, K: u32, ps: u32, lid: u32) -> Trip {
  let tpr = tpr_of(kind);
  return load_trip(row_of(kind, pass_row(kind, nrows, ps, lid)), K / (4u * CV), lid % tpr, tpr);
}

// The scan phase's loads that do not wait for x_proj (a thread's, for one pass): its lane's
// first eight dt_proj weights (k = lane + j LANES; zeros past R), its state's A and h, the
// channel's D and dt bias.
struct ScanIn { w0: vec4<f32>, w1: vec4<f32>, a: f32, h: f32, d: f32, b: f32 };

fn scan_in(ps: u32, lid: u32) -> ScanIn {
  let lane = lid % LANES;
  let ic = min(ps * (THREADS / LANES) + lid / LANES, p.I - 1u);
  let wr = ic * p.R;
  let last = p.R - 1u;
  var o: ScanIn;
  o.w0 = vec4<f32>(dt_w[wr + min(lane, last)], dt_w[wr + min(lane + LANES, last)],
                   dt_w[wr + min(lane + 2u * LANES, last)], dt_w[wr + min(lane + 3u * LANES, last)]);
  o.w1 = vec4<f32>(dt_w[wr + min(lane + 4u * LANES, last)], dt_w[wr + min(lane + 5u * LANES, last)],
                   dt_w[wr + min(lane + 6u * LANES, last)], dt_w[wr + min(lane + 7u * LANES, last)]);
  let n = min(lane, p.N - 1u);
  o.a = a_log[ic * p.N + n];
  o.h = st[p.ssm_off + ic * p.N + n];
  o.d = dskip[ic];
  o.b = dt_b[ic];
  return o;
}

// The term j of dt_proj's sum for the lane, k = k0 + j LANES (skipped past R).
fn dt_term(x: f32, k: u32, w: f32) -> f32 { return select(x, x + xq[k] * w, k < p.R); }

// Pass ps of the scan phase: channel i's dt (dt_proj over dt_low, + bias, softplus), its N
// states stepped (lane n: state n), y_i = (C . h + D u_i) * silu(z_i): the engine's scan step
// (lib/selective_scan_step_body.wgsl) in its order, a channel per LANES threads. xq holds
// x_proj's outputs; Falcon's 1/rms of dt_low, B and C are in nq. `pre`: scan_in(ps).
fn scan_pass(ps: u32, pre: ScanIn, lid: u32, sg: u32) {
  let lane = lid % LANES;
  let falcon = (p.flags & 2u) != 0u;
  let i = ps * (THREADS / LANES) + lid / LANES;
  let ok = i < p.I;
  let ic = min(i, p.I - 1u);
  let uw = atomicLoad(&sc[U0() + ic]);       // u and z in flight while dt is summed
  let zw = atomicLoad(&sc[Z0() + ic]);
  // dt_proj: the lane's terms in k order, the first eight preloaded; past 8 LANES (R > 128)
  // eight loaded before any is added
  var x = 0.0;
  x = dt_term(x, lane, pre.w0.x);
  x = dt_term(x, lane + LANES, pre.w0.y);
  x = dt_term(x, lane + 2u * LANES, pre.w0.z);
  x = dt_term(x, lane + 3u * LANES, pre.w0.w);
  x = dt_term(x, lane + 4u * LANES, pre.w1.x);
  x = dt_term(x, lane + 5u * LANES, pre.w1.y);
  x = dt_term(x, lane + 6u * LANES, pre.w1.z);
  x = dt_term(x, lane + 7u * LANES, pre.w1.w);
  let wr = ic * p.R;
  let last = p.R - 1u;
  for (var k = lane + 8u * LANES; k < p.R; k += 8u * LANES) {
    let w0 = dt_w[wr + k];
    let w1 = dt_w[wr + min(k + LANES, last)];
    let w2 = dt_w[wr + min(k + 2u * LANES, last)];
    let w3 = dt_w[wr + min(k + 3u * LANES, last)];
    let w4 = dt_w[wr + min(k + 4u * LANES, last)];
    let w5 = dt_w[wr + min(k + 5u * LANES, last)];
    let w6 = dt_w[wr + min(k + 6u * LANES, last)];
    let w7 = dt_w[wr + min(k + 7u * LANES, last)];
    x = dt_term(x, k, w0);
    x = dt_term(x, k + LANES, w1);
    x = dt_term(x, k + 2u * LANES, w2);
    x = dt_term(x, k + 3u * LANES, w3);
    x = dt_term(x, k + 4u * LANES, w4);
    x = dt_term(x, k + 5u * LANES, w5);
    x = dt_term(x, k + 6u * LANES, w6);
    x = dt_term(x, k + 7u * LANES, w7);
  }
  x = group_sum(x, lid, LANES, sg);          // in the channel's lane 0
  if (lane == 0u) {
    if (falcon) { x *= nq[0]; }
    dts[lid / LANES] = softplus(x + pre.b);
  }
  workgroupBarrier();
  let dt = dts[lid / LANES];
  let uu = settle(U0() + ic, uw);
  var acc = 0.0;
  if (ok && lane < p.N) {
    var sb = 1.0;
    var sc_ = 1.0;
    if (falcon) { sb = nq[1]; sc_ = nq[2]; }
    let a = -exp(pre.a);
    let dbu = dt * uu;
    let h = exp(dt * a) * pre.h + dbu * xq[p.R + lane] * sb;
    st[p.ssm_off + ic * p.N + lane] = h;
    acc = xq[p.R + p.N + lane] * sc_ * h;
  }
  let tot = group_sum(acc, lid, LANES, sg);
  if (ok && lane == 0u) {
    put(Y0() + i, (tot + pre.d * uu) * silu(settle(Z0() + ic, zw)));
  }
  workgroupBarrier();                        // dts is written again by the next pass
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

// Passes a phase of a kind's rows.
fn passes_of(kind: u32, nrows: u32) -> u32 {
  let rpw = THREADS / tpr_of(kind);
  return (nrows + rpw - 1u) / rpw;
}

// Phase 0: in_proj's rows over h = residual * norm weight (its 1/rms scales the sums), the x
// half through the conv step into u, the z half into z; h staged by the workgroup's first
// block -- a workgroup that takes none reads nothing of the residual, so phase 3's writes into
// it come after every read (through the rows' outputs).
fn phase_in(G: u32, g0: u32, lid: u32, sg: u32) {
  let nrows = 2u * p.I;
  let bl = blocks_of(passes_of(RK_IN, nrows), G);
  var q = first_trip(RK_IN, nrows, p.D, min(g0 * bl.per, bl.np - 1u), lid);
  var b = take_block(0u, G, bl, g0, g0, lid);
  var rstd = 0.0;
  var staged = false;
  while (b < bl.nb) {
    if (b != g0) { q = first_trip(RK_IN, nrows, p.D, b * bl.per, lid); }
    if (!staged) {
      var ss = 0.0;
      for (var k = lid; k < p.D / 4u; k += THREADS) {
        let v = vec4<f32>(res[4u * k], res[4u * k + 1u], res[4u * k + 2u], res[4u * k + 3u]);
        ss += dot(v, v);
        xs[xs_slot(k)] = v * nw[k];
      }
      ss = group_sum(ss, lid, THREADS, sg);
      if (lid == 0u) { wsum = ss; }
      workgroupBarrier();
      rstd = inverseSqrt(wsum / f32(p.D) + p.eps);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    q = run_rows(RK_IN, nrows, p.D, b * bl.per, ps1, lid, sg, q, q, false, rstd);
    finish_block(0u, G, ps1 - b * bl.per, lid);
    b = take_block(0u, G, bl, bl.nb, g0, lid);
  }
}

// Phase 1 (x_proj over u) or 3 (out_proj over y, into the residual): the input staged, once
// phase ph - 1's wait_np passes are done, by the workgroup's first block; its own block's
// first trip (with AHEAD its second too) loading before that wait.
fn phase_rows(ph: u32, kind: u32, nrows: u32, in0: u32, G: u32, g0: u32, lid: u32, sg: u32,
              wait_np: u32) {
  let bl = blocks_of(passes_of(kind, nrows), G);
  let own = min(g0 * bl.per, bl.np - 1u);
  let nchunk = p.I / (4u * CV);
  var q = first_trip(kind, nrows, p.I, own, lid);
  var q2 = q;
  if (AHEAD) {                               // its next trip too, while the phase before runs
    q2 = trip_after(kind, nrows, nchunk, row_of(kind, pass_row(kind, nrows, own, lid)), own, 0u,
                    lid);
  }
  var b = take_block(ph, G, bl, g0, g0, lid);
  var staged = false;
  while (b < bl.nb) {
    let early = AHEAD && b == g0 && !staged;
    if (b != g0) { q = first_trip(kind, nrows, p.I, b * bl.per, lid); }
    if (!staged) {
      wait_phase(ph - 1u, G, wait_np, lid);
      stage_words(in0, p.I, lid, THREADS);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    q = run_rows(kind, nrows, p.I, b * bl.per, ps1, lid, sg, q, q2, early, 1.0);
    finish_block(ph, G, ps1 - b * bl.per, lid);
    b = take_block(ph, G, bl, bl.nb, g0, lid);
  }
}

// Phase 2: dt_proj, the scan step and the gate into y; x_proj's outputs staged, once phase 1's
// wait_np passes are done, by the workgroup's first block. The loads that do not wait for
// x_proj (scan_in) are issued before the wait for the workgroup's own block's first pass, and
// a pass ahead after that.
fn phase_scan(G: u32, g0: u32, lid: u32, sg: u32, wait_np: u32) {
  let bl = blocks_of((p.I + THREADS / LANES - 1u) / (THREADS / LANES), G);
  var at = min(g0 * bl.per, bl.np - 1u);     // the pass `pre` holds
  var pre = scan_in(at, lid);
  var b = take_block(2u, G, bl, g0, g0, lid);
  var staged = false;
  while (b < bl.nb) {
    if (!staged) {
      wait_phase(1u, G, wait_np, lid);
      stage_xproj(lid);
      staged = true;
    }
    let ps1 = min((b + 1u) * bl.per, bl.np);
    for (var ps = b * bl.per; ps < ps1; ps++) {
      if (at != ps) { pre = scan_in(ps, lid); }
      at = min(ps + 1u, bl.np - 1u);
      let nxt = scan_in(at, lid);
      scan_pass(ps, pre, lid, sg);
      pre = nxt;
    }
    finish_block(2u, G, ps1 - b * bl.per, lid);
    b = take_block(2u, G, bl, bl.nb, g0, lid);
  }
}

@compute @workgroup_size(THREADS)
fn mamba1_persist(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  failed = false;
  let g0 = wg.x;
  let G = nwg.x;
  let np_in = passes_of(RK_IN, 2u * p.I);
  let np_xp = passes_of(RK_XP, p.R + 2u * p.N);
  let np_scan = (p.I + THREADS / LANES - 1u) / (THREADS / LANES);
  phase_in(G, g0, lid, sg);                                          // -> u, z
  if (LAST < 1u) { return; }
  phase_rows(1u, RK_XP, p.R + 2u * p.N, U0(), G, g0, lid, sg, np_in);    // x_proj -> xp
  if (LAST < 2u) { return; }
  phase_scan(G, g0, lid, sg, np_xp);                                 // dt_proj, scan, gate -> y
  if (LAST < 3u) { return; }
  phase_rows(3u, RK_OUT, p.D, Y0(), G, g0, lid, sg, np_scan);        // out_proj -> residual
}
