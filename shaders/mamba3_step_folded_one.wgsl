// Mamba-3's folded SISO step (mamba3_step_folded.wgsl's forms and math) reading the token's x,
// B and C through the raw scalars' binding too: the mixer's packed in_proj writes all eight of
// its outputs side by side, so x, B, C, dd_dt, dd_A, trap and angles are views of one buffer
// (their offsets relative to that binding in p.x_off .. p.an_str). Three storage bindings fewer
// than mamba3_step_folded.wgsl: mamba3_step_rows_last binds 8 (the raw inputs, `arrived`, the
// packed parameters, y, 4 states) and so fits the 10 a Mac's Chrome gives, where that form's 11
// made a Mac run the step as two dispatches (py_engine/ops/mamba3.mamba3_step picks the file).
//#include "lib/mamba3_step_folded_body.wgsl"

fn x_val(i: u32) -> f32 { return raw[i]; }
fn bn_val(i: u32) -> f32 { return raw[i]; }
fn cn_val(i: u32) -> f32 { return raw[i]; }
