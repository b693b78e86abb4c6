// Mamba-1's decode step with x_proj's outputs as the previous dispatch's P shares per
// sequence, each over its block of channels (lib/matvec_xproj.wgsl, matvec_forward_conv_xproj):
// the xproj_sum that lib/selective_scan_step_body.wgsl calls sums them into xo.
override XP_P: u32 = 1u;                 // shares per sequence
@group(0) @binding(14) var<storage, read> xpart: array<vec4<f32>>;   // shares [Bsz, P, Q]
var<workgroup> xsplit: array<vec4<f32>, 128>;   // split s of vec4 q at [s * Q + q]

// xo = the sum of sequence b's shares. Thread lid sums vec4 q = lid % Q of shares s, s + S,
// s + 2S, ... (s = lid / Q, S = 128 / Q splits), eight loads issued before any is added (one
// memory wait per eight shares), then thread q adds the S splits in order. Uniform control flow.
fn xproj_sum(lid: u32, b: u32) {
  let S = 128u / XP_Q;
  let q = lid % XP_Q;
  let s = lid / XP_Q;
  var acc = vec4<f32>(0.0);
  if (s < S) {
    let base = b * XP_P * XP_Q + q;
    var k = s;
    for (; k + 7u * S < XP_P; k += 8u * S) {
      let v0 = xpart[base + k * XP_Q];
      let v1 = xpart[base + (k + S) * XP_Q];
      let v2 = xpart[base + (k + 2u * S) * XP_Q];
      let v3 = xpart[base + (k + 3u * S) * XP_Q];
      let v4 = xpart[base + (k + 4u * S) * XP_Q];
      let v5 = xpart[base + (k + 5u * S) * XP_Q];
      let v6 = xpart[base + (k + 6u * S) * XP_Q];
      let v7 = xpart[base + (k + 7u * S) * XP_Q];
      acc += v0; acc += v1; acc += v2; acc += v3;
      acc += v4; acc += v5; acc += v6; acc += v7;
    }
    for (; k < XP_P; k += S) { acc += xpart[base + k * XP_Q]; }
  }
  xsplit[lid] = acc;
  workgroupBarrier();
  if (lid < XP_Q) {
    var t = xsplit[lid];
    for (var j = 1u; j < S; j++) { t += xsplit[j * XP_Q + lid]; }
    xo[lid] = t;
  }
  workgroupBarrier();
}
