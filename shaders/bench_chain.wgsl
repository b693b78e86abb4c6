enable subgroups;
// Would a decode token's chain of dependent kernels run faster as one dispatch? A benchmark
// kernel (tools/bench_chain.py), not one the engine runs. A chain of f16 mat-vecs shaped like a
// Mamba-1 decode token -- per layer in_proj [4d, d], x_proj [R + 2N, 2d], dt [2d, R], out_proj
// [d, 2d], each stage's input the first K outputs of the stage before -- runs two ways through
// the same row code:
//   chain_stage       one dispatch a stage, as the engine's decode: the dispatch boundary is
//                     the wait (an H200 costs ~2 us a boundary with nothing in it, and each
//                     small kernel ramps up and drains on its own)
//   chain_persistent  every stage in one dispatch of G workgroups that stay resident (or one
//                     dispatch a layer): each waits inside the kernel for its stage's input,
//                     with its first weights already loading
// WGSL has no grid barrier and no device-scope fence, so the wait carries validity in the data
// itself (lib/spin_words.wgsl, shared with the engine's layer kernel lib/mamba1_persist.wgsl):
// a stage's outputs live in words of a buffer zeroed before the token, stored once with
// atomicStore and spun on with atomicLoad until not zero. Unlike the layer kernel, whose
// workgroups take whichever blocks of rows are left, rows go to workgroups by a fixed stride
// here -- the bench's bound on what the boundaries cost. A per-stage count of finished
// workgroups (done[s]) only tells thread 0 when to start reading, so that 256 threads do not
// poll words not yet written. Forward progress needs all G workgroups resident at once, which
// WebGPU does not promise: every spin is bounded (p.spin loads) and each thread that gives up
// adds one to fails[0] -- the result is then wrong, but the dispatch ends. (On lavapipe every
// spin pass also counts against its 65,535 loop passes an invocation, shaders/LOOP_BUDGET.md:
// keep p.spin x stages well under that there, as the test does.)

// chain_stage runs stage `stage`; chain_persistent stages stage .. stage + stages - 1.
struct Params { stage: u32, stages: u32, spin: u32, _pad: u32 };

@group(0) @binding(0) var<uniform> p: Params;
// Stage s: st.s[2s] = (N, K, kind, w_off), st.s[2s + 1] = (in_off, out_off, -, -): rows, inputs
// (a multiple of 8), which weight buffer (0..3), its first vec4 in it; the input's and the
// output's first word in sc.
struct Stages { s: array<vec4<u32>, 1024> };
@group(0) @binding(1) var<uniform> st: Stages;
@group(0) @binding(2) var<storage, read> x0: array<vec4<f32>>;             // [K_0 / 4] stage 0's input
@group(0) @binding(3) var<storage, read_write> sc: array<atomic<u32>>;     // every stage's outputs
@group(0) @binding(4) var<storage, read_write> done: array<atomic<u32>>;   // [stages] workgroups finished
@group(0) @binding(5) var<storage, read_write> fails: array<atomic<u32>>;  // [1] spins given up
@group(0) @binding(6) var<storage, read> w0: array<vec4<u32>>;             // [sets, N, K / 8] 8 f16s a vec4
@group(0) @binding(7) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(9) var<storage, read> w3: array<vec4<u32>>;

const THREADS = 256u;
// Threads a row (a power of two, 4..256): a pass of a workgroup covers THREADS / TPR rows.
override TPR: u32 = 64u;
// The row sums' tree steps below the subgroup size as subgroup shuffles (as the engine's
// mat-vec with MAMBAWEB_MATVEC_SG), else all through workgroup memory.
override SG: bool = true;

// The persistent form's thread 0 waits for done[s - 1] before the input's words are read (else
// every thread spins on its own words from the start: the bench's "words" forms).
override COUNTER: bool = true;

var<workgroup> xs: array<vec4<f32>, 1024>;     // the stage's input, K <= 4096
var<workgroup> red: array<f32, THREADS>;
var<private> failed: bool;                     // this thread gave up a spin: spin no more

//#include "lib/group_sum.wgsl"
//#include "lib/spin_words.wgsl"

fn xs_slot(v: u32) -> u32 { return v; }        // the input in order (lib/spin_words.wgsl)

fn load_w(kind: u32, i: u32) -> vec4<u32> {
  switch kind {
    case 0u: { return w0[i]; }
    case 1u: { return w1[i]; }
    case 2u: { return w2[i]; }
    default: { return w3[i]; }
  }
}

// Four chunks of 8 weights: chunks c, c + TPR, c + 2 TPR, c + 3 TPR of the row starting at
// vec4 `base` (clamped into the row), all loads issued before any is used.
struct Trip { a: vec4<u32>, b: vec4<u32>, c: vec4<u32>, d: vec4<u32> };

fn load_trip(kind: u32, base: u32, c: u32, nchunk: u32) -> Trip {
  var t: Trip;
  t.a = load_w(kind, base + min(c, nchunk - 1u));
  t.b = load_w(kind, base + min(c + TPR, nchunk - 1u));
  t.c = load_w(kind, base + min(c + 2u * TPR, nchunk - 1u));
  t.d = load_w(kind, base + min(c + 3u * TPR, nchunk - 1u));
  return t;
}

// Chunk c's 8 weights dotted with inputs 8c .. 8c + 7; 0 for a chunk past the row.
fn chunk_dot(q: vec4<u32>, c: u32, nchunk: u32) -> f32 {
  let i = 2u * min(c, nchunk - 1u);
  let v = dot(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xs[i]) +
          dot(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xs[i + 1u]);
  return select(0.0, v, c < nchunk);
}

fn give_up() {
  failed = true;
  atomicAdd(&fails[0], 1u);
}

// Stage s's K inputs into xs. Persistent (wait_done), thread 0 first waits until all G
// workgroups have finished stage s - 1; every word is then spun on anyway.
fn get_input(s: u32, K: u32, in_off: u32, lid: u32, G: u32, wait_done: bool) {
  if (s == 0u) {
    for (var i = lid; i < K / 4u; i += THREADS) { xs[i] = x0[i]; }
  } else {
    if (wait_done && COUNTER && lid == 0u) {
      var n = 0u;
      while (atomicLoad(&done[s - 1u]) < G && !failed) {
        n++;
        if (n >= p.spin) { give_up(); }
      }
    }
    workgroupBarrier();
    stage_words(in_off, K, lid, THREADS);
  }
  workgroupBarrier();
}

// Stage s by workgroup g0 of G: passes g0, g0 + G, .. of THREADS / TPR rows each. The thread's
// next trip of weights is always in flight while it sums one: the first before the input is
// there, the next pass's first during a pass's last trip.
fn run_stage(s: u32, g0: u32, G: u32, lid: u32, sg: u32, persist: bool) {
  let a = st.s[2u * s];
  let b = st.s[2u * s + 1u];
  let N = a.x;
  let K = a.y;
  let kind = a.z;
  let w_off = a.w;
  let nchunk = K / 8u;
  let rpw = THREADS / TPR;
  let lane = lid % TPR;
  let slot = lid / TPR;
  let span = 4u * TPR;                            // chunks a trip covers
  let trips = (nchunk + span - 1u) / span;
  var q = load_trip(kind, w_off + min(g0 * rpw + slot, N - 1u) * nchunk, lane, nchunk);
  get_input(s, K, b.x, lid, G, persist);
  for (var ps = g0; ps * rpw < N; ps += G) {
    let r = ps * rpw + slot;
    let base = w_off + min(r, N - 1u) * nchunk;
    var acc = 0.0;
    for (var t = 0u; t < trips; t++) {
      let c = lane + span * t;
      var nxt: Trip;
      if (t + 1u < trips) {
        nxt = load_trip(kind, base, c + span, nchunk);
      } else {
        nxt = load_trip(kind, w_off + min((ps + G) * rpw + slot, N - 1u) * nchunk, lane, nchunk);
      }
      acc += chunk_dot(q.a, c, nchunk) + chunk_dot(q.b, c + TPR, nchunk) +
             chunk_dot(q.c, c + 2u * TPR, nchunk) + chunk_dot(q.d, c + 3u * TPR, nchunk);
      q = nxt;
    }
    let total = group_sum(acc, lid, TPR, sg);
    if (lane == 0u && r < N) { put(b.y + r, total); }
  }
  if (persist) {
    workgroupBarrier();                           // every thread's stores issued
    if (lid == 0u) { atomicAdd(&done[s], 1u); }
  }
}

// One stage (p.stage) a dispatch.
@compute @workgroup_size(256)
fn chain_stage(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
               @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  failed = false;
  run_stage(p.stage, wg.x, nw.x, lid, sg, false);
}

// Stages p.stage .. p.stage + p.stages - 1 in one dispatch (every stage of the chain, or one
// layer's four); its workgroups must all be resident at once.
@compute @workgroup_size(256)
fn chain_persistent(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) sg: u32) {
  failed = false;
  for (var s = p.stage; s < p.stage + p.stages; s++) {
    run_stage(s, wg.x, nw.x, lid, sg, true);
    workgroupBarrier();                           // xs is staged again by the next stage
  }
}
