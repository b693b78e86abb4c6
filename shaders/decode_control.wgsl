// Runs after a decode step's sampler (py_engine/models/generate.py) where the sampler cannot
// do it itself (ops/sampling.fold_control: several rows drawn by sampling_sample, or turned
// off): counts the step, appends the chosen ids to the repetition-penalty history, advances a
// recorded decode step's positions and puts row 0's id in the Generator's ring, on the GPU, so
// that recorded steps chain one after another in one submit without the host writing anything.
//#include "lib/decode_counters.wgsl"

struct Params { rows: u32, hist_cap: u32, pos_count: u32, ring_len: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> token: array<u32>;          // [rows] the sampled ids
@group(0) @binding(2) var<storage, read_write> ctl: array<u32>;      // [1 + rows] sampling.py's
@group(0) @binding(3) var<storage, read_write> hist: array<u32>;     // [rows, hist_cap]
@group(0) @binding(4) var<storage, read_write> pos: array<u32>;      // [pos_count] tokens seen
@group(0) @binding(5) var<storage, read_write> ring: array<u32>;     // [2 * ring_len]

@compute @workgroup_size(1)
fn decode_advance() {
  for (var r = 0u; r < p.rows; r++) { count_row(r, token[r]); }
  count_step(token[0]);
}
