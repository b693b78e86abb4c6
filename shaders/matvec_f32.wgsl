enable subgroups;
// Mat-vec with f32 weights read as vec4<f32> (16-byte chunks); the kernel: lib/matvec_rows.wgsl.
//#include "lib/matvec_f32_format.wgsl"
//#include "lib/matvec_y2.wgsl"
//#include "lib/matvec_rows.wgsl"
//#include "lib/matvec_xproj.wgsl"
