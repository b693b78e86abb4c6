// Does Dawn's experimental subgroup-matrix feature (tensor cores from WGSL) work on this GPU, and
// how fast is a plain GEMM written with it? A probe for the prefill GEMM, outside the engine:
//
//   node tools/dawn/subgroup_matrix_probe.mjs tools/dawn/node_modules/webgpu [M N K ...]
//
// With Dawn's unsafe APIs allowed (Chrome: --enable-unsafe-webgpu) it lists the adapter's
// subgroup-matrix configs, takes the first with f16 operands and f32 results, else i8 operands
// and i32 results (8-bit operands stored 4 to an i32 word, offsets and strides counted in 8-bit
// elements), and runs C[M, N] = A[M, K] @ B[K, N] (A, B row-major): one subgroup per workgroup, each
// computing 2 x 2 tiles of the config's M x N, K walked a tile at a time straight from global
// memory (no workgroup staging: a floor, not a tuned kernel). Inputs are the integers -4 .. 4
// (over 4 for f16: exact, and their sums exact in f32), so every checked entry must equal the
// exact product: a 128^3 product whole, and 64 sampled entries of each timed shape. Prints one
// JSON line per step; exits 0 also where the feature is missing (it says so).
//
// What it found on the H200 (2026-12-01, npm webgpu's Dawn, Vulkan): no shader-f16 and so no
// f16 configs -- only i8 / u8 operands into i32 / u32 results, 16x16x32 and 16x8x32; the i8
// 128^3 product exact (all 16,384 entries; with offsets and strides counted in words, as some of
// Dawn's own tests count them, every entry was wrong); the next, larger product aborted the process
// (std::system_error from dawn.node), not investigated further. A timed GEMM is still to come.
import { writeSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const { create, globals } = await import(pathToFileURL(join(resolve(process.argv[2]), "index.js")).href);
Object.assign(globalThis, globals);
const shapes = [];
for (let i = 3; i + 2 < process.argv.length; i += 3) shapes.push(process.argv.slice(i, i + 3).map(Number));
if (!shapes.length) shapes.push([1024, 8192, 2048], [1024, 2048, 4096]);   // mamba-1.4b in_proj, out_proj
// written synchronously: dawn.node aborted at exit on the H200 (std::system_error), which lost
// console.log's buffered lines
const say = (o) => writeSync(1, JSON.stringify(o) + "\n");

const FEATURE = "chromium-experimental-subgroup-matrix";
const adapter = await create(["enable-dawn-features=allow_unsafe_apis"]).requestAdapter(
  { powerPreference: "high-performance" });
if (!adapter || !adapter.features.has(FEATURE)) {
  say({ step: "adapter", subgroup_matrix: false, vendor: adapter?.info?.vendor ?? null });
  process.exit(0);
}
const configs = [...(adapter.info.subgroupMatrixConfigs ?? [])].map((c) => ({
  componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K }));
say({ step: "adapter", subgroup_matrix: true, vendor: adapter.info.vendor,
      subgroupMaxSize: adapter.info.subgroupMaxSize, configs });
const cfg = configs.find((c) => c.componentType === "f16" && c.resultComponentType === "f32") ??
            configs.find((c) => c.componentType === "i8" && c.resultComponentType === "i32");
if (!cfg) { say({ step: "config", error: "no f16 -> f32 or i8 -> i32 config" }); process.exit(0); }
const I8 = cfg.componentType === "i8";
const [T, RT, ST] = I8 ? ["i8", "i32", "i32"] : ["f16", "f32", "f16"];   // operand, result, storage
say({ step: "config", ...cfg });
const device = await adapter.requestDevice({
  requiredFeatures: [FEATURE, "shader-f16", "subgroups", "timestamp-query"].filter((f) => adapter.features.has(f)),
  requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
                    maxBufferSize: adapter.limits.maxBufferSize } });
device.addEventListener("uncapturederror", (e) => say({ step: "gpu-error", error: String(e.error?.message ?? e) }));
const SG = adapter.info.subgroupMaxSize;

// 2 x 2 tiles per subgroup: rows [i0, i0 + 2 TM), columns [j0, j0 + 2 TN)
const code = `
enable chromium_experimental_subgroup_matrix;
${I8 ? "" : "enable f16;"}
const TM = ${cfg.M}u; const TN = ${cfg.N}u; const TK = ${cfg.K}u;
alias L = subgroup_matrix_left<${T}, ${cfg.K}, ${cfg.M}>;
alias R = subgroup_matrix_right<${T}, ${cfg.N}, ${cfg.K}>;
alias C = subgroup_matrix_result<${RT}, ${cfg.N}, ${cfg.M}>;
struct P { M: u32, N: u32, K: u32, _p: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<${ST}>;         // [M, K] row-major
@group(0) @binding(2) var<storage, read> b: array<${ST}>;         // [K, N] row-major
@group(0) @binding(3) var<storage, read_write> c: array<${RT}>;   // [M, N] row-major
@compute @workgroup_size(${SG})
fn gemm(@builtin(workgroup_id) wid: vec3<u32>) {
  let i0 = wid.y * 2u * TM;
  let j0 = wid.x * 2u * TN;
  var c00 = C(); var c01 = C(); var c10 = C(); var c11 = C();
  for (var k = 0u; k < p.K; k += TK) {
    let a0 = subgroupMatrixLoad<L>(&a, i0 * p.K + k, false, p.K);
    let a1 = subgroupMatrixLoad<L>(&a, (i0 + TM) * p.K + k, false, p.K);
    let b0 = subgroupMatrixLoad<R>(&b, k * p.N + j0, false, p.N);
    let b1 = subgroupMatrixLoad<R>(&b, k * p.N + j0 + TN, false, p.N);
    c00 = subgroupMatrixMultiplyAccumulate(a0, b0, c00);
    c01 = subgroupMatrixMultiplyAccumulate(a0, b1, c01);
    c10 = subgroupMatrixMultiplyAccumulate(a1, b0, c10);
    c11 = subgroupMatrixMultiplyAccumulate(a1, b1, c11);
  }
  subgroupMatrixStore(&c, i0 * p.N + j0, c00, false, p.N);
  subgroupMatrixStore(&c, i0 * p.N + j0 + TN, c01, false, p.N);
  subgroupMatrixStore(&c, (i0 + TM) * p.N + j0, c10, false, p.N);
  subgroupMatrixStore(&c, (i0 + TM) * p.N + j0 + TN, c11, false, p.N);
}`;
device.pushErrorScope("validation");
const module = device.createShaderModule({ code });
const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "gemm" } });
const err = await device.popErrorScope();
if (err) { say({ step: "compile", error: err.message }); process.exit(0); }

const F16 = [0xBC00, 0xBA00, 0xB800, 0xB400, 0x0000, 0x3400, 0x3800, 0x3A00, 0x3C00];  // -1 .. 1 by 1/4
const aVal = (i, k) => (i * 7 + k * 3) % 9;          // index into F16: value (v - 4) / 4
const bVal = (k, j) => (k * 5 + j * 2 + 1) % 9;
const exact = (K, i, j) => {
  let s = 0;
  for (let k = 0; k < K; k++) s += (aVal(i, k) - 4) * (bVal(k, j) - 4);
  return I8 ? s : s / 16;
};

function buffer(bytes, usage) { return device.createBuffer({ size: Math.max(16, bytes), usage }); }
async function run(M, N, K, reps) {
  const A = I8 ? new Int8Array(M * K) : new Uint16Array(M * K);
  const B = I8 ? new Int8Array(K * N) : new Uint16Array(K * N);
  const enc16 = (v) => (I8 ? v - 4 : F16[v]);
  for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) A[i * K + k] = enc16(aVal(i, k));
  for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) B[k * N + j] = enc16(bVal(k, j));
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, bytesC = 4 * M * N;
  const ba = buffer(A.byteLength, S), bb = buffer(B.byteLength, S);
  const bc = buffer(bytesC, S | GPUBufferUsage.COPY_SRC), u = buffer(16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  device.queue.writeBuffer(ba, 0, A); device.queue.writeBuffer(bb, 0, B);
  device.queue.writeBuffer(u, 0, new Uint32Array([M, N, K, 0]));
  const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [
    { binding: 0, resource: { buffer: u } }, { binding: 1, resource: { buffer: ba } },
    { binding: 2, resource: { buffer: bb } }, { binding: 3, resource: { buffer: bc } }] });
  const once = (n) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline); pass.setBindGroup(0, bg);
    for (let r = 0; r < n; r++) pass.dispatchWorkgroups(N / (2 * cfg.N), M / (2 * cfg.M));
    pass.end();
    device.queue.submit([enc.finish()]);
    return device.queue.onSubmittedWorkDone();
  };
  await once(1);
  const t0 = performance.now();
  await once(reps);
  const ms = (performance.now() - t0) / reps;
  const staging = device.createBuffer({ size: bytesC, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(bc, 0, staging, 0, bytesC);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  for (const x of [ba, bb, bc, u]) x.destroy();
  const got = I8 ? new Int32Array(staging.getMappedRange().slice(0))
                 : new Float32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  let checked = 0, wrong = 0;
  const whole = M * N <= 128 * 128;
  for (let t = 0; t < (whole ? M * N : 64); t++) {
    const idx = whole ? t : Math.floor((t * 2654435761) % (M * N));
    const i = Math.floor(idx / N), j = idx % N;
    checked++;
    if (got[idx] !== exact(K, i, j)) wrong++;
  }
  return { M, N, K, operands: T, ms_per_gemm: ms, tera_ops_per_s: (2 * M * N * K) / (ms * 1e9),
           checked, wrong };
}

const tile = [2 * cfg.M, 2 * cfg.N, Math.max(cfg.K, 4)];
say({ step: "check", ...(await run(128, 128, 128, 1)) });
for (const [M, N, K] of shapes) {
  if (M % tile[0] || N % tile[1] || K % tile[2]) { say({ step: "gemm", M, N, K, error: `shape not a multiple of ${tile}` }); continue; }
  say({ step: "gemm", ...(await run(M, N, K, 10)) });
}
process.exit(0);
