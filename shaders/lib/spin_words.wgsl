// Values handed between workgroups of one dispatch without a grid barrier (WGSL has none, nor a
// device-scope fence): every value is a word of an atomic scratch buffer zeroed before the
// dispatch, stored once with atomicStore (+0.0 as -0.0, so no value is the zero word) and read
// with atomicLoad, spun on while still zero -- only the per-location coherence of atomics is
// relied on, each word carrying its own validity. Used by shaders/lib/mamba1_persist.wgsl (a
// Mamba-1 decode layer in one dispatch) and shaders/bench_chain.wgsl (its benchmark).
// The including file declares:
//   var<storage, read_write> sc: array<atomic<u32>>   the words
//   var<workgroup> xs: array<vec4<f32>, ..>            where a workgroup stages a phase's input
//   fn xs_slot(v: u32) -> u32                          where in xs vec4 v of the input goes
//   var<private> failed: bool                          this thread gave up a spin: no more spins
//   fn give_up()                                       sets failed, counts the give-up
// and its Params p a field `spin`: the loads a spin makes before it gives up.

// A value as the producer stores it: never the zero word.
fn put(i: u32, v: f32) {
  let u = bitcast<u32>(v);
  atomicStore(&sc[i], select(u, 0x80000000u, u == 0u));
}

// Word i once written (spun on, bounded).
fn word(i: u32) -> f32 {
  var u = atomicLoad(&sc[i]);
  var n = 0u;
  while (u == 0u && !failed) {
    n++;
    if (n >= p.spin) { give_up(); }
    u = atomicLoad(&sc[i]);
  }
  return bitcast<f32>(u);
}

// Word i, loaded as u: u itself, or (still zero) spun on.
fn settle(i: u32, u: u32) -> f32 {
  if (u != 0u) { return bitcast<f32>(u); }
  return word(i);
}

fn load4(o: u32) -> vec4<u32> {
  return vec4<u32>(atomicLoad(&sc[o]), atomicLoad(&sc[o + 1u]), atomicLoad(&sc[o + 2u]),
                   atomicLoad(&sc[o + 3u]));
}

fn put4(v: u32, nv: u32, o: u32, u: vec4<u32>) {
  if (v < nv) {
    xs[xs_slot(v)] = vec4<f32>(settle(o, u.x), settle(o + 1u, u.y), settle(o + 2u, u.z), settle(o + 3u, u.w));
  }
}

// n words from word w0 into xs (as n / 4 vec4s), by a workgroup of `threads`. A thread's words
// load together, 16 at a time, before any is looked at; only a word still zero is then spun on
// (each word spun on alone costs a round trip to the L2: 16 of them a thread at mamba-1.4b's
// width). Ends with a barrier.
fn stage_words(w0: u32, n: u32, lid: u32, threads: u32) {
  let nv = n / 4u;
  for (var i = lid; i < nv; i += 4u * threads) {
    let i1 = i + threads;
    let i2 = i + 2u * threads;
    let i3 = i + 3u * threads;
    let a = load4(w0 + 4u * i);
    let b = load4(w0 + 4u * min(i1, nv - 1u));
    let c = load4(w0 + 4u * min(i2, nv - 1u));
    let d = load4(w0 + 4u * min(i3, nv - 1u));
    put4(i, nv, w0 + 4u * i, a);
    put4(i1, nv, w0 + 4u * i1, b);
    put4(i2, nv, w0 + 4u * i2, c);
    put4(i3, nv, w0 + 4u * i3, d);
  }
  workgroupBarrier();
}
