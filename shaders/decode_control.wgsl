// Runs after a decode step's sampler (py_engine/models/generate.py): counts the step and
// appends the chosen ids to the repetition-penalty history, on the GPU, so that recorded steps
// chain one after another in one submit without the host writing anything between them.
//   ctl[0] += 1;  for each row r with room: history[r, ctl[1 + r]] = token[r]; ctl[1 + r] += 1

struct Params { rows: u32, hist_cap: u32, _a: u32, _b: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> token: array<u32>;          // [rows] the sampled ids
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;      // [1 + rows] sampling.py's
@group(0) @binding(3) var<storage, read_write> history: array<u32>;  // [rows, hist_cap]

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
}
