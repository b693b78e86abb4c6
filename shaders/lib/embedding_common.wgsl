// What embedding_forward.wgsl and embedding_backward.wgsl share (include with
// //#include "lib/embedding_common.wgsl"): the Params the ops pack for both entry points
// (py_engine/ops/embedding.py) and the token ids. An id >= vocab reads zeros / is skipped.

struct Params { tokens: u32, dim: u32, vocab: u32, flags: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T]
