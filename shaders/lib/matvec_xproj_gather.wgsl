// Mamba-1 decode: in_proj + conv step with x_proj's shares folded in (lib/matvec_xproj.wgsl),
// and the shares gathered inside the same dispatch, so that the scan step sums PG group totals
// instead of P shares (py_engine/ops/linear.in_proj_conv_xproj_step, gather).
// Without this, each of the scan's workgroups summed all P shares itself: at mamba-1.4b
// (P = 256, O = 160) 512 workgroups read 164 KB each, and the fold lost to x_proj's own
// dispatch. Here the conv block's workgroups form groups of XP_F consecutive ones; each counts
// itself in its group's word once its shares are stored, and the group's last to arrive adds
// the group's shares up in a fixed order and writes the group's total. No workgroup waits for
// another to start or finish -- only the last reads what the others stored, and they stored it
// before they counted. WGSL's atomics being relaxed, their stores may still be in flight as it
// reads: each share word is non-zero once stored (lib/matvec_y2_words.wgsl), so it takes every
// word of the group and zeroes it, one atomicExchange each, all issued before any is looked at
// (one memory round trip, not one a word), then takes again any that was still zero, at most
// XP_SPIN times -- leaving the words zero for the next token. A word still zero then is counted
// in the give-up word (a wrong token, never a hung tab): the count the checks read
// (tests/browser/decode_fold_cases.check_xproj). Its late store would then outlive the
// dispatch, a wrong share for a later token as well: a give-up means a backend whose atomics
// are not coherent, which the checks refuse.
// y2 (binding 8, words): totals [MR, PG, O4] | shares [MR, P, O4] | counts [PG] | give-ups [1]
// (PG = ceil(P / XP_F); the scan reads the totals as its shares, XP_P = PG). The buffer starts
// zeroed and every dispatch leaves its shares and counts zero again.
// The group's shares pass through xt (the staged x's workgroup memory, free once the rows are
// summed): XP_F * MR * O <= 4 * TILE values (the host checks).
const XP_SPIN = 4096u;
var<workgroup> xp_last: u32;

// Word index of the group's value i = (s * MR + m) * O + o: share s0 + s of row m, output o.
fn xp_share_at(i: u32, SH: u32, P: u32, O: u32, O4: u32, s0: u32) -> u32 {
  let r = i % (MR * O);
  return SH + ((r / O) * P + s0 + i / (MR * O)) * O4 + r % O;
}

@compute @workgroup_size(THREADS)
fn matvec_forward_conv_xproj_gather(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) lid: u32,
                                    @builtin(subgroup_size) sg: u32) {
  if (!has_rows(wid, nwg)) { return; }  // uniform per workgroup
  conv_xproj_shares(wid, nwg, lid, sg);
  if (wid.z != CONV_G) { return; }      // the z block: no shares
  let xs = xp_shape(wid, nwg);
  let P = xs.P;
  let O = xs.O;
  let O4 = xs.O4;
  let F = max(XP_F, 1u);                 // XP_F > 0 here (the host's), never a division by 0
  let PG = (P + F - 1u) / F;
  let SH = xp_shares_at(P, O4);
  let g = xs.wg / F;
  let s0 = g * F;
  let members = min(F, P - s0);
  let counts = SH + MR * P * O4;
  // every thread's share stores issued before the count
  workgroupBarrier();
  if (lid == 0u) {
    let before = atomicAdd(&y2[counts + g], 1u);
    xp_last = select(0u, 1u, before + 1u == members);
  }
  if (workgroupUniformLoad(&xp_last) == 0u) { return; }
  // The group's last: its shares, value i = (s * MR + m) * O + o, into xt -- each taken once,
  // none waited on (the loop's exchanges are independent of one another) ...
  let n = members * MR * O;
  for (var i = lid; i < n; i += THREADS) {
    xt[i / 4u][i % 4u] = bitcast<f32>(atomicExchange(&y2[xp_share_at(i, SH, P, O, O4, s0)], 0u));
  }
  // ... then any still zero taken again until it is not (a store still in flight)
  for (var i = lid; i < n; i += THREADS) {
    var v = bitcast<u32>(xt[i / 4u][i % 4u]);
    if (v != 0u) { continue; }
    let at = xp_share_at(i, SH, P, O, O4, s0);
    for (var tries = 0u; v == 0u && tries < XP_SPIN; tries++) { v = atomicExchange(&y2[at], 0u); }
    if (v == 0u) { atomicAdd(&y2[counts + PG], 1u); }
    xt[i / 4u][i % 4u] = bitcast<f32>(v);
  }
  workgroupBarrier();
  for (var r = lid; r < MR * O; r += THREADS) {
    var acc = 0.0;
    for (var s = 0u; s < members; s++) {
      let i = s * MR * O + r;
      acc += xt[i / 4u][i % 4u];
    }
    atomicStore(&y2[((r / O) * PG + g) * O4 + r % O], bitcast<u32>(acc));   // the next dispatch reads it
  }
  if (lid == 0u) { atomicStore(&y2[counts + g], 0u); }
}
