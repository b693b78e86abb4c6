enable subgroups;
// The q4 mat-vec module whose y2 (binding 8) is words read and written atomically: Mamba-1's
// in_proj + conv step with x_proj's shares gathered inside the dispatch
// (lib/matvec_xproj_gather.wgsl). The other entry points are matvec_q4.wgsl's, unused here.
//#include "lib/matvec_q4_format.wgsl"
//#include "lib/matvec_y2_words.wgsl"
//#include "lib/matvec_rows.wgsl"
//#include "lib/matvec_xproj.wgsl"
//#include "lib/matvec_xproj_gather.wgsl"
