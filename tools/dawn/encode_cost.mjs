// What encoding one compute dispatch costs the host through Dawn's Node bindings (dawn.node),
// by the number of storage buffers its bind group holds:
//
//   node tools/dawn/encode_cost.mjs tools/dawn/node_modules/webgpu [bindings ...]
//
// A decode token replays ~100-200 recorded dispatches (setPipeline, setBindGroup,
// dispatchWorkgroups each); under Node, Dawn validates each dispatch's bindings in the calling
// thread (in Chrome that happens in the GPU process, beside the tab's JavaScript). For each
// binding count: 100 dispatches of 6 alternating pipelines, each reading its bindings, encoded
// and submitted 300 times (all counts once to warm up, then again measured); prints one JSON line
// {bindings, encode_us, submit_us} per count (microseconds per dispatch: the JS calls +
// finish(), and queue.submit()).
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const { create, globals } = await import(pathToFileURL(join(resolve(process.argv[2]), "index.js")).href);
Object.assign(globalThis, globals);
globalThis.keepGpu = create([]);      // a collected instance under a live device crashes Node
const adapter = await globalThis.keepGpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) { console.error("Dawn found no adapter (VK_DRIVER_FILES?)"); process.exit(1); }
const device = await adapter.requestDevice({
  requiredLimits: { maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage },
});
const counts = process.argv.length > 3 ? process.argv.slice(3).map(Number) : [1, 4, 8, 12];
const DISPATCHES = 100, PIPELINES = 6, REPS = 300;
const bufs = [];
for (let i = 0; i < DISPATCHES; i++) {
  bufs.push(device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }));
}

function shader(n, tag) {             // binding 0 written, bindings 1 .. n-1 read
  let decl = "@group(0) @binding(0) var<storage, read_write> b0: array<f32>;\n";
  let sum = "b0[i] + 1.0";
  for (let k = 1; k < n; k++) {
    decl += `@group(0) @binding(${k}) var<storage, read> b${k}: array<f32>;\n`;
    sum += ` + b${k}[i]`;
  }
  return `${decl}// ${tag}\n@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) { b0[i] = ${sum}; }`;
}

async function settle() {             // wait for the queue through a mapped read
  const st = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(bufs[0], 0, st, 0, 256);
  device.queue.submit([enc.finish()]);
  await st.mapAsync(GPUMapMode.READ);
  st.unmap();
  st.destroy();
}

// every count twice, the first pass unreported: V8 optimises the loop during the first counts
for (const [n, report] of [...counts.map((n) => [n, false]), ...counts.map((n) => [n, true])]) {
  const pipes = [];
  for (let p = 0; p < PIPELINES; p++) {
    const module = device.createShaderModule({ code: shader(n, `${n}/${p}`) });
    pipes.push(device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } }));
  }
  const cmds = [];
  for (let i = 0; i < DISPATCHES; i++) {
    const pipe = pipes[i % PIPELINES];
    const entries = [];
    for (let k = 0; k < n; k++) entries.push({ binding: k, resource: { buffer: bufs[(i + k) % DISPATCHES] } });
    cmds.push([pipe, device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries })]);
  }
  let encode = 0, submit = 0;
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const [pipe, group] of cmds) {   // as gpu_bridge.mjs encodes, the pipeline changing each time
      pass.setPipeline(pipe);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(1);
    }
    pass.end();
    const cb = enc.finish();
    const t1 = performance.now();
    device.queue.submit([cb]);
    submit += performance.now() - t1;
    encode += t1 - t0;
    if (r % 50 === 49) await settle();
  }
  if (report) console.log(JSON.stringify({ bindings: n, encode_us: +(1000 * encode / REPS / DISPATCHES).toFixed(2),
                               submit_us: +(1000 * submit / REPS / DISPATCHES).toFixed(2) }));
}
process.exit(0);
