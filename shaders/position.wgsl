// Decode positions on the GPU: pos[b] += n for every sequence b.
//
// Recorded at the end of every model step (and of a prefill that continues a state), so a
// replayed decode graph advances the position itself: per-token values (attention's KV-cache
// slot, a rotary angle) are read from this buffer instead of being written by the host.
// Dispatch: ceil(count / 64) workgroups of 64; no reads of other buffers.

struct Params { n: u32, count: u32, _pad0: u32, _pad1: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> pos: array<u32>;   // [Bsz] tokens seen per sequence

@compute @workgroup_size(64)
fn position_advance(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < p.count) {
    pos[gid.x] = pos[gid.x] + p.n;
  }
}
