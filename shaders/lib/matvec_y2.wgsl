// The mat-vec's third output (lib/matvec_rows.wgsl), plain f32: W_2's rows, or Mamba-1's
// x_proj shares (lib/matvec_xproj.wgsl).
@group(0) @binding(8) var<storage, read_write> y2: array<f32>;      // [M, N2], or the shares [M, P, O4]

fn y2_set(idx: u32, v: f32) { y2[idx] = v; }
fn y2_get(idx: u32) -> f32 { return y2[idx]; }
