// The sum of v over each aligned group of L threads (L a power of two, at most the workgroup),
// in the group's first thread: the tree's steps of at least the subgroup size through
// workgroup memory (a barrier each), the rest (SG) as subgroup shuffles -- lane l adds lane
// l ^ step, which for l < step is l + step: the same additions in the same order either way.
// Called in uniform control flow. The including file declares `var<workgroup> red: array<f32,
// THREADS>` and `override SG: bool`. (lib/matvec_rows.wgsl's lanes_sum is the vec4 form.)
fn group_sum(v: f32, lid: u32, L: u32, sg: u32) -> f32 {
  let lane = lid % L;
  var low = 1u;
  if (SG) { low = max(sg, 1u); }
  var step = L / 2u;
  var s = v;
  if (step >= low) {
    red[lid] = s;
    workgroupBarrier();
    for (; step >= low; step >>= 1u) {
      if (lane < step) { red[lid] += red[lid + step]; }
      workgroupBarrier();
    }
    s = red[lid];
    workgroupBarrier();                      // red is written again by the next sum
  }
  if (SG) {
    for (; step > 0u; step >>= 1u) { s += subgroupShuffleXor(s, step); }
  }
  return s;
}
