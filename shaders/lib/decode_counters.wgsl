// The decode's counters after a token is sampled, shared by decode_control.wgsl (a dispatch of
// their own) and sampling.wgsl (its last dispatch, ADVANCE). The including file binds
//   ctl  [1 + rows] u32   step counter, then each row's history length (ops/sampling.py)
//   hist [rows, p.hist_cap] u32   the repetition-penalty history
//   pos  [p.pos_count] u32        the model state's positions
//   ring [2 * p.ring_len] u32     the sampled ids the Generator reads back (one row)
// and its Params has hist_cap, pos_count and ring_len.

// Row `row` sampled `tok`: appended to its history where there is room.
fn count_row(row: u32, tok: u32) {
  let n = ctl[1u + row];
  if (n < p.hist_cap) {
    hist[row * p.hist_cap + n] = tok;
    ctl[1u + row] = n + 1u;
  }
}

// Once per step, after row 0 sampled `tok0`: with a ring (ring_len R > 0) the id goes to
// ring[s % R] and ring[s % R + R], s the step counter before it moves -- the ids of any R
// consecutive steps lie in one contiguous range, read back without a copy after each step
// (which also ended the compute pass); then the step counter and the positions move.
fn count_step(tok0: u32) {
  let s = ctl[0];
  if (p.ring_len > 0u) {
    ring[s % p.ring_len] = tok0;
    ring[s % p.ring_len + p.ring_len] = tok0;
  }
  ctl[0] = s + 1u;
  for (var b = 0u; b < p.pos_count; b++) { pos[b] += 1u; }
}
