// f32 weights [N, K] into a narrow format (lib/weight_formats.wgsl), done once at load.
//   f16, bf16: round to nearest even, one thread per output word (two values).
//   q8: one workgroup per row: scale = max|w| * (1/127), q = round(w / scale) in [-127, 127].
//   q4: one thread per pair of groups of 32 (the pair shares one scale word): GGUF Q4_0's
//       rule, d = m / -8 with m the group's value of largest magnitude (rounded to f16),
//       nibble = clamp(round(w / d) + 8, 0, 15).
//#include "lib/weight_formats.wgsl"

struct Params { N: u32, K: u32, _a: u32, _b: u32 };

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // [N, K]
@group(0) @binding(2) var<storage, read_write> q: array<u32>;      // packed, with scales

fn word_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * 256u; }

@compute @workgroup_size(256)
fn quantize_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = word_index(gid, nwg);
  if (i >= p.N * p.K / 2u) { return; }
  q[i] = pack2x16float(vec2<f32>(src[2u * i], src[2u * i + 1u]));
}

fn bf16_bits(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

@compute @workgroup_size(256)
fn quantize_bf16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = word_index(gid, nwg);
  if (i >= p.N * p.K / 2u) { return; }
  q[i] = bf16_bits(src[2u * i]) | (bf16_bits(src[2u * i + 1u]) << 16u);
}

var<workgroup> amax: array<f32, 256>;

// workgroups: one per row, x + y * 65535 (rows can exceed one dispatch dimension)
@compute @workgroup_size(256)
fn quantize_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  var m = 0.0;
  for (var k = lid; k < p.K; k += 256u) { m = max(m, abs(src[row * p.K + k])); }
  amax[lid] = m;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { amax[lid] = max(amax[lid], amax[lid + s]); }
    workgroupBarrier();
  }
  let scale = amax[0] * (1.0 / 127.0);   // a product: correctly rounded everywhere (a division
                                          // may be 2.5 ulp off), so every GPU stores the same scale
  let inv = select(0.0, 1.0 / scale, scale > 0.0);
  let kw = p.K / 4u;
  for (var c = lid; c < kw; c += 256u) {
    let base = row * p.K + 4u * c;
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
      let v = i32(clamp(round(src[base + j] * inv), -127.0, 127.0));
      word |= (bitcast<u32>(v) & 0xffu) << (8u * j);
    }
    q[row * kw + c] = word;
  }
  if (lid == 0u) { q[p.N * kw + row] = bitcast<u32>(scale); }
}

fn q4_group(group: u32) -> f32 {   // packs one group of 32; returns its scale
  let base = group * 32u;
  var m = 0.0;
  for (var j = 0u; j < 32u; j++) {
    let v = src[base + j];
    if (abs(v) > abs(m)) { m = v; }
  }
  let d = unpack2x16float(pack2x16float(vec2<f32>(m / -8.0, 0.0))).x;
  let inv = select(0.0, 1.0 / d, d != 0.0);
  for (var wd = 0u; wd < 4u; wd++) {
    var word = 0u;
    for (var j = 0u; j < 8u; j++) {
      let n = u32(clamp(round(src[base + 8u * wd + j] * inv) + 8.0, 0.0, 15.0));
      word |= n << (4u * j);
    }
    q[group * 4u + wd] = word;
  }
  return d;
}

@compute @workgroup_size(256)
fn quantize_q4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let pair = word_index(gid, nwg);
  let groups = p.N * p.K / 32u;
  if (2u * pair >= groups) { return; }
  let d0 = q4_group(2u * pair);
  var d1 = 0.0;
  if (2u * pair + 1u < groups) { d1 = q4_group(2u * pair + 1u); }
  q[p.N * p.K / 8u + pair] = pack2x16float(vec2<f32>(d0, d1));
}
