// The device's read-bandwidth ceiling for the benchmarks (py_engine/benchmarks/ceilings.py):
// every thread streams 16-byte loads through a buffer with a grid stride, 4 in flight, and
// writes one sum per thread (so the loads cannot be optimised away); `passes` times over the
// buffer per dispatch, so that a run long enough to time takes few dispatches (the host's
// recording of many would count as read time). The decode mat-vecs are judged against this
// number on the same device.

struct Params { n4: u32, threads: u32, passes: u32, _b: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;     // [n4]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;     // [threads]

@compute @workgroup_size(256)
fn read_bandwidth(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.threads) { return; }
  var a = vec4<f32>(0.0);
  var b = vec4<f32>(0.0);
  var c = vec4<f32>(0.0);
  var d = vec4<f32>(0.0);
  let s = p.threads;
  for (var r = 0u; r < max(p.passes, 1u); r++) {
    var i = t;
    for (; i + 3u * s < p.n4; i += 4u * s) {
      a += src[i];
      b += src[i + s];
      c += src[i + 2u * s];
      d += src[i + 3u * s];
    }
    for (; i < p.n4; i += s) { a += src[i]; }
  }
  let v = a + b + c + d;
  out[t] = v.x + v.y + v.z + v.w;
}
