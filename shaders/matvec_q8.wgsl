enable subgroups;
// Mat-vec with int8 weights and one f32 scale per row (lib/weight_formats.wgsl's q8), read 16
// at a time; the kernel: lib/matvec_rows.wgsl. The scales follow the data in the same buffer
// (N*K/4 words of data: a whole number of vec4s since K % 16 == 0).
//#include "lib/matvec_q8_format.wgsl"
//#include "lib/matvec_y2.wgsl"
//#include "lib/matvec_rows.wgsl"
//#include "lib/matvec_xproj.wgsl"
