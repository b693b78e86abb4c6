enable subgroups;
// Mat-vec with bf16 weights, two per u32, read 8 at a time; the kernel: lib/matvec_rows.wgsl.
//#include "lib/matvec_bf16_format.wgsl"
//#include "lib/matvec_y2.wgsl"
//#include "lib/matvec_rows.wgsl"
//#include "lib/matvec_xproj.wgsl"
