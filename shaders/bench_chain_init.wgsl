// Random f16 weights for tools/bench_chain.py, made on the GPU (the benchmark's 2.5 GB of
// weights at mamba-1.4b's shape need no host upload, and Pyodide has no numpy): word i holds
// two f16s uniform in [-scale, scale), from a hash of (seed, 2i) and (seed, 2i + 1).

struct Params { n: u32, seed: u32, scale: f32, _pad: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;     // [n] two f16s a word

// PCG's output hash (O'Neill's pcg32 rxs-m-xs step) of one 32-bit input.
fn hash(x: u32) -> u32 {
  let h = x * 747796405u + 2891336453u;
  let m = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (m >> 22u) ^ m;
}

fn uniform_at(i: u32) -> f32 {
  return f32(hash(i ^ hash(p.seed)) >> 8u) * (2.0 / 16777216.0) - 1.0;
}

@compute @workgroup_size(256)
fn chain_init(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nw: vec3<u32>) {
  for (var i = gid.x; i < p.n; i += nw.x * 256u) {
    w[i] = pack2x16float(vec2<f32>(uniform_at(2u * i), uniform_at(2u * i + 1u)) * p.scale);
  }
}
