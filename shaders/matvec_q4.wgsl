enable subgroups;
// Mat-vec with 4-bit weights, one f16 scale per group of 32 (lib/weight_formats.wgsl's q4): a
// 16-byte chunk is exactly one group; the kernel: lib/matvec_rows.wgsl. The scales follow the
// data in the same buffer (N*K/8 words of data: a whole number of vec4s since K % 32 == 0).
//#include "lib/matvec_q4_format.wgsl"
//#include "lib/matvec_y2.wgsl"
//#include "lib/matvec_rows.wgsl"
//#include "lib/matvec_xproj.wgsl"
