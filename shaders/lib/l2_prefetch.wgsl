// Warming the GPU's L2 cache with the weight the NEXT dispatch reads, from the extra workgroups
// of a latency-bound one (py_engine/ops/l2_prefetch.py). Decoding mamba-1.4b, out_proj
// (2048 x 4096, 16.8 MB in f16) read at ~60% of the memory bandwidth where in_proj read at
// ~90%, while x_proj and the scan step before it left the memory idle for ~8 us a layer
// (latency-bound: a few MB each). Read during those, out_proj's bytes wait in the L2 (50 MB on
// an H100/H200) for the mat-vec that needs them.
// Nothing here changes a result: the words read are XORed together and dropped, except that
// the including kernel stores them where they can never be asked for (pf_sink: a uniform flag
// bit the host never sets) -- without an observable use the compiler would drop the loads.
//
// The including file calls l2_prefetch(k, groups, lid, threads) from workgroup k of `groups`
// extra ones (uniform control flow not needed: no barriers here).

@group(0) @binding(14) var<storage, read> pf: array<vec4<u32>>;   // [PF_VEC4S] the next weight, read and dropped

override PF_VEC4S: u32 = 0u;       // 16-byte words to read (the weight's bytes / 16, or a cap)
const PF_TRIP = 8u;                // loads a thread issues before it waits for any

// Flags bit the host never sets: the sink's store stays in the program but never runs.
const PF_SINK_FLAG = 0x40000000u;

// This workgroup's share of pf: thread lid reads words lid + k*threads + j*groups*threads, eight
// at a time (the ones past the end neither loaded nor used), and returns their XOR.
fn l2_prefetch(k: u32, groups: u32, lid: u32, threads: u32) -> vec4<u32> {
  let stride = groups * threads;
  var acc = vec4<u32>(0u);
  for (var i = k * threads + lid; i < PF_VEC4S; i += PF_TRIP * stride) {
    var a = pf[i];
    var b = vec4<u32>(0u); var c = vec4<u32>(0u); var d = vec4<u32>(0u);
    var e = vec4<u32>(0u); var f = vec4<u32>(0u); var g = vec4<u32>(0u); var h = vec4<u32>(0u);
    if (i + stride < PF_VEC4S) { b = pf[i + stride]; }
    if (i + 2u * stride < PF_VEC4S) { c = pf[i + 2u * stride]; }
    if (i + 3u * stride < PF_VEC4S) { d = pf[i + 3u * stride]; }
    if (i + 4u * stride < PF_VEC4S) { e = pf[i + 4u * stride]; }
    if (i + 5u * stride < PF_VEC4S) { f = pf[i + 5u * stride]; }
    if (i + 6u * stride < PF_VEC4S) { g = pf[i + 6u * stride]; }
    if (i + 7u * stride < PF_VEC4S) { h = pf[i + 7u * stride]; }
    acc ^= a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
  }
  return acc;
}

// Whether the including kernel stores the XOR (flags: its uniform flags word): never, as the
// host never sets PF_SINK_FLAG, but the compiler cannot know that.
fn pf_sink(flags: u32, v: vec4<u32>) -> bool {
  return (flags & PF_SINK_FLAG) != 0u && v.x == 0x9e3779b9u;
}
