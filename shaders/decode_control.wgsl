// Runs after a decode step's sampler (py_engine/models/generate.py): counts the step and
// appends the chosen ids to the repetition-penalty history, on the GPU, so that recorded steps
// chain one after another in one submit without the host writing anything between them.
//   ctl[0] += 1;  for each row r with room: history[r, ctl[1 + r]] = token[r]; ctl[1 + r] += 1
// and, for a recorded decode step, the model's positions: pos[b] += 1 for b < pos_count (what
// position.wgsl's position_advance would do at the end of the model's step: one dispatch a
// token fewer; nothing between the two reads a position).

struct Params { rows: u32, hist_cap: u32, pos_count: u32, _b: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> token: array<u32>;          // [rows] the sampled ids
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;      // [1 + rows] sampling.py's
@group(0) @binding(3) var<storage, read_write> history: array<u32>;  // [rows, hist_cap]
@group(0) @binding(4) var<storage, read_write> pos: array<u32>;      // [pos_count] tokens seen

@compute @workgroup_size(1)
fn decode_advance() {
  ctl[0] += 1u;
  for (var r = 0u; r < p.rows; r++) {
    let n = ctl[1u + r];
    if (n < p.hist_cap) {
      history[r * p.hist_cap + n] = token[r];
      ctl[1u + r] = n + 1u;
    }
  }
  for (var b = 0u; b < p.pos_count; b++) {
    pos[b] += 1u;
  }
}
