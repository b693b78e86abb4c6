// Mamba-1's decode step with x_proj's outputs as sums the previous dispatch added through
// integer atomics (lib/matvec_xproj.wgsl, matvec_forward_conv_xacc; lib/fixed_sums.wgsl: the
// same sums in any order): the xproj_sum that lib/selective_scan_step_body.wgsl calls reads
// sequence b's O sums into xo. The sums must be zero again before the next token's in_proj
// adds into them, and no workgroup may zero them while another still reads: each workgroup
// counts itself done reading (word 0) as soon as it has, and the one that counts last zeroes
// every word at the kernel's end (xsum_release). No workgroup waits for another.
//#include "lib/fixed_sums.wgsl"
@group(0) @binding(14) var<storage, read_write> xacc: array<atomic<i32>>;   // [4 + Bsz * O * FX_WORDS]
var<private> xs_ticket: i32;     // thread 0's: how many workgroups had read before this one
var<workgroup> xs_last: u32;

fn xproj_sum(lid: u32, b: u32) {
  let O = p._p0 + 2u * NS;
  for (var o = lid; o < O; o += 128u) {
    let base = 4u + (b * O + o) * FX_WORDS;
    var w: array<i32, 6>;
    for (var k = 0u; k < FX_WORDS; k++) { w[k] = atomicLoad(&xacc[base + k]); }
    xo[o / 4u][o % 4u] = fx_value(w);
  }
  workgroupBarrier();                    // every thread's reads are done (their values used)
  if (lid == 0u) { xs_ticket = atomicAdd(&xacc[0], 1); }
}

// Called at the kernel's end by every thread, in uniform control flow: the workgroup that
// counted last zeroes the sums and the count.
fn xsum_release(lid: u32, nwg: vec3<u32>) {
  if (lid == 0u) { xs_last = u32(xs_ticket == i32(nwg.x * nwg.y * nwg.z) - 1); }
  let last = workgroupUniformLoad(&xs_last);
  if (last != 0u) {
    for (var k = 1u + lid; k < arrayLength(&xacc); k += 128u) { atomicStore(&xacc[k], 0); }
    if (lid == 0u) { atomicStore(&xacc[0], 0); }
  }
}
