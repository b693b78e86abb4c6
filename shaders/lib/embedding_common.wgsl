// What embedding_forward.wgsl and embedding_backward.wgsl share (include with
// //#include "lib/embedding_common.wgsl"): the Params the ops pack for both entry points
// (py_engine/ops/embedding.py) and the token ids. An id >= vocab reads zeros / is skipped.
// A table split into row blocks (py_engine/gpu/row_chunks.py: tables past the GPU's binding
// limit) is bound one block at a time: rows [row0, row0 + vocab) of the whole table, so the
// block's row of id is id - row0 (u32 arithmetic: an id below row0 wraps past vocab and is
// outside the block). flags bit0 (forward): leave the output row of an id outside the block
// untouched (another block writes it) instead of writing zeros.

struct Params { tokens: u32, dim: u32, vocab: u32, flags: u32, row0: u32, _a: u32, _b: u32, _c: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;          // [T]
