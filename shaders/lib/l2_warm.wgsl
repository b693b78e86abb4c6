// Warming the GPU's L2 cache with a later dispatch's weights (py_engine/ops/l2_warm.py).
// A decode layer's small kernels (x_proj, the scan step) are bound by their own latency chains
// and leave the GPU's memory bus idle while they run; the big mat-vecs that follow them wait
// on DRAM. A kernel that includes this file gets extra workgroups (an entry point of its own,
// `..._warm`, so the plain one binds nothing more) that read the weights of a dispatch to come
// -- out_proj's while x_proj runs, the next layer's in_proj while the scan step runs -- so
// that those reads then hit L2 (50 MB on an H100/H200) instead of DRAM. The warming
// workgroups compute nothing anyone reads: the values loaded are folded into one word, which
// the including kernel stores only under a flag the host never sets (WARM_SINK in its Params'
// flags) -- loads whose results are unused would be removed by the compiler, and a store that
// cannot happen is the cheapest use that cannot be proved dead. Results are bit for bit those
// of the plain entry point (tests/unit/test_l2_warm_native.py).

const WARM_SINK = 0x80000000u;   // a Params flags bit no host ever sets

@group(0) @binding(15) var<storage, read> warm0: array<vec4<u32>>;   // a later dispatch's weights
@group(0) @binding(16) var<storage, read> warm1: array<vec4<u32>>;   // a second range (or 16 bytes)

fn warm_len(b: u32) -> u32 { if (b == 0u) { return arrayLength(&warm0); } return arrayLength(&warm1); }
fn warm_at(b: u32, i: u32) -> vec4<u32> { if (b == 0u) { return warm0[i]; } return warm1[i]; }

// Workgroup `slot` of `slots` reads its share of warm0 and of warm1 (each array cut into
// `slots` consecutive spans), `threads` threads a workgroup, eight 16-byte loads in flight per
// thread (one load at a time, as a plain loop would issue them, would leave the bus as idle as
// the kernel it hides in). Returns the xor of every word it read, as an f32's bits.
fn warm_l2(slot: u32, slots: u32, lid: u32, threads: u32) -> f32 {
  var acc = vec4<u32>(0u);
  for (var b = 0u; b < 2u; b++) {
    let n = warm_len(b);
    let per = (n + slots - 1u) / slots;
    let hi = min(n, slot * per + per);
    var i = slot * per + lid;
    for (; i + 7u * threads < hi; i += 8u * threads) {
      let a0 = warm_at(b, i);
      let a1 = warm_at(b, i + threads);
      let a2 = warm_at(b, i + 2u * threads);
      let a3 = warm_at(b, i + 3u * threads);
      let a4 = warm_at(b, i + 4u * threads);
      let a5 = warm_at(b, i + 5u * threads);
      let a6 = warm_at(b, i + 6u * threads);
      let a7 = warm_at(b, i + 7u * threads);
      acc ^= a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
    }
    for (; i < hi; i += threads) { acc ^= warm_at(b, i); }
  }
  return bitcast<f32>(acc.x ^ acc.y ^ acc.z ^ acc.w);
}
