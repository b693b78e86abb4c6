// Sequence copies over activations laid out [Bsz*T, stride] row-major (py_engine/ops/sequence.py):
// C columns of every row of `src`, starting at column src_col, go to columns dst_col.. of the
// same row of `dst` -- or, with the reverse flag, of the row at the mirrored time in the same
// sequence:
//   dst[b*T + t', dst_col + c]  (+)=  src[b*T + t, src_col + c]      t' = reverse ? T-1-t : t
// One op serves three uses: time reversal (bidirectional layers' backward pass), writing a
// tensor into a column window (concatenation) and reading one back (its backward). Reversal
// is its own adjoint and a column gather's adjoint is the matching scatter, so the backward
// of every use is this same entry point with the roles of src and dst swapped.
// One thread per copied value; the grid may be folded into y when n > 65535*256.

struct Params {
  n: u32,          // Bsz * T * C values copied
  T: u32,          // tokens per sequence
  C: u32,          // columns copied per row
  flags: u32,      // bit0 reverse time, bit1 accumulate into dst
  src_stride: u32, // floats per row of src
  src_col: u32,    // first column read
  dst_stride: u32, // floats per row of dst
  dst_col: u32,    // first column written
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;         // [Bsz*T, src_stride]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;   // [Bsz*T, dst_stride]

@compute @workgroup_size(256)
fn sequence_copy_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let row = i / p.C;
  let c = i % p.C;
  var out_row = row;
  if ((p.flags & 1u) != 0u) {
    let t = row % p.T;
    out_row = row - t + (p.T - 1u - t);
  }
  let v = src[row * p.src_stride + p.src_col + c];
  let o = out_row * p.dst_stride + p.dst_col + c;
  if ((p.flags & 2u) != 0u) { dst[o] += v; } else { dst[o] = v; }
}
