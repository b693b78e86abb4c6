// Warming the GPU's L2 with weights a later dispatch of the same token reads. Decode's small
// kernels (Mamba-1's x_proj and scan step at 1.4b) are bound by chains of dependent steps, not
// by bytes: for microseconds the memory system idles. Workgroups added to such a dispatch load
// one u32 every WARM_STEP words of `warm` (a later mat-vec's matrix, or part of it): the lines
// land in the L2 on the way, and that mat-vec then reads them from there instead of from DRAM
// (an H200's L2 holds 50 MB; mamba-1.4b's f16 out_proj is 16.8 MB). WGSL has no prefetch, so
// the loads are XORed and the result stored only where the caller's flags carry WARM_NEVER,
// which the host never sets: nothing is written, nothing depends on the loads, and the test on
// a uniform the compiler cannot know keeps them from being dropped.
// The including kernel binds the bytes at 15 and calls warm_l2 from its warming workgroups
// (py_engine/ops/weight_format.warm_groups says how many; the same results either way).
@group(0) @binding(15) var<storage, read> warm: array<u32>;    // any bytes [arrayLength]
override WARM_FROM: u32 = 0u;      // the first warming workgroup (x); the kernel's own before it
override WARM_STEP: u32 = 8u;      // words between the loads (8: one per 32-byte sector)
const WARM_NEVER = 0x80000000u;    // a flags bit the host never sets

// XOR of warm[(first + i * stride) * WARM_STEP] over every such index in range, four loads in
// flight at a time. first: this thread among the warming ones; stride: their number.
fn warm_l2(first: u32, stride: u32) -> u32 {
  let n = arrayLength(&warm);
  let st = stride * WARM_STEP;
  var i = first * WARM_STEP;
  var acc = 0u;
  for (; i + 3u * st < n; i += 4u * st) {
    acc ^= warm[i] ^ warm[i + st] ^ warm[i + 2u * st] ^ warm[i + 3u * st];
  }
  for (; i < n; i += st) { acc ^= warm[i]; }
  return acc;
}

// Whether the loads' XOR is to be stored: never (flags never carry WARM_NEVER).
fn warm_kept(flags: u32, acc: u32) -> bool { return (flags & WARM_NEVER) != 0u && acc == 0x5bd1e995u; }
