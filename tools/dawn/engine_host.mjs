// The tab's engine under Node.js with Chrome's WebGPU (Dawn, npm `webgpu`'s dawn.node) as
// navigator.gpu: Pyodide + py_engine/gpu/browser.py + web/js/gpu_bridge.mjs, unchanged, so
// what this measures is what a Chrome tab gets on the same GPU. Driven by tools/dawn_engine.py.
//
//   node engine_host.mjs --origin http://127.0.0.1:PORT --pyodide DIR --webgpu DIR
//                        [--dawn-toggle NAME=VALUE ...] [--fallback-icd FILE.json]
//
// --origin serves /engine/manifest.json and the weights (the mambaweb server); --pyodide is the
// npm pyodide folder; --webgpu the npm webgpu package folder. --fallback-icd: a Vulkan ICD to
// use when the system's drivers give Dawn no adapter (SwiftShader's, shipped with Chromium).
//
// Protocol: stdin carries one JSON request per line, {id, code, args} (a snippet run like the
// tab's `run` op); stdout carries replies, one per line, prefixed "@@mw " ({id, ok, result} or
// {id, ok: false, error}); the first reply (id 0) is the boot info. Everything else (Pyodide's
// print, Dawn's warnings, status) goes to stderr.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

import * as bridge from "../../web/js/gpu_bridge.mjs";

const reply = (obj) => process.stdout.write("@@mw " + JSON.stringify(obj) + "\n");
const log = (text) => process.stderr.write(`[dawn] ${text}\n`);

function parseArgs(argv) {
  const out = { toggles: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`engine_host.mjs: ${k} needs a value`);
    if (k === "--origin") out.origin = v;
    else if (k === "--pyodide") out.pyodide = v;
    else if (k === "--webgpu") out.webgpu = v;
    else if (k === "--dawn-toggle") out.toggles.push(v);
    else if (k === "--fallback-icd") out.fallbackIcd = v;
    else throw new Error(`engine_host.mjs: unknown option ${k}`);
  }
  for (const k of ["origin", "pyodide", "webgpu"]) {
    if (!out[k]) throw new Error(`engine_host.mjs: --${k} is required`);
  }
  return out;
}

// The GPU object for navigator.gpu. Dawn reads the Vulkan loader's environment when it makes
// an instance, so a fallback ICD can be tried after the system's drivers offered nothing.
async function pickGpu(create, opts) {
  const wanted = { powerPreference: "high-performance" };
  let gpu = create(opts.toggles);
  if (await gpu.requestAdapter(wanted)) return { gpu, icd: process.env.VK_DRIVER_FILES || null };
  const userChoseIcd = process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES;
  if (!userChoseIcd && opts.fallbackIcd && existsSync(opts.fallbackIcd)) {
    log(`the system's Vulkan drivers gave Dawn no adapter; trying ${opts.fallbackIcd} (CPU)`);
    process.env.VK_DRIVER_FILES = opts.fallbackIcd;
    gpu = create(opts.toggles);
    if (await gpu.requestAdapter(wanted)) return { gpu, icd: opts.fallbackIcd };
  }
  return { gpu: null, icd: process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES || null };
}

async function main() {
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 20) throw new Error(`Node ${process.version} is too old for Dawn's bindings: use Node 20+`);
  const opts = parseArgs(process.argv.slice(2));
  const { create, globals } = await import(pathToFileURL(join(opts.webgpu, "index.js")).href);
  Object.assign(globalThis, globals);            // GPUBufferUsage, GPUMapMode, ... as in a tab
  const { gpu, icd } = await pickGpu(create, opts);
  if (gpu === null) {
    reply({ id: 0, ok: false, error: "Dawn found no WebGPU adapter" +
            (icd ? ` with VK_DRIVER_FILES=${icd}` : "") + ": install a Vulkan driver and " +
            "libvulkan1 and point VK_DRIVER_FILES at the driver's ICD .json (on a machine " +
            "without a GPU, installing chromium provides SwiftShader's)" });
    process.exit(1);
  }
  // What a Worker has and py_engine expects: navigator.gpu, self, the bridge as mwGpu.
  // (Pyodide reads navigator.userAgent and fails to boot without it; navigator.gpu also keeps
  // Dawn's instance alive, and a collected instance under a live device crashes Node.)
  const userAgent = globalThis.navigator?.userAgent ?? `Node.js/${process.version.slice(1)}`;
  Object.defineProperty(globalThis, "navigator", { value: { gpu, userAgent }, configurable: true,
                                                   writable: true });
  globalThis.self = globalThis;
  globalThis.mwGpu = { encodeAndSubmit: bridge.encodeAndSubmit, readBuffer: bridge.readBuffer,
                       fetchRangeToBuffers: bridge.fetchRangeToBuffers,
                       watchDevice: bridge.watchDevice, takeGpuErrors: bridge.takeGpuErrors,
                       takeSubmitTimes: bridge.takeSubmitTimes,
                       status: (text) => log(text) };
  globalThis.mwEmit = () => {};                   // page events: no page here

  const { loadPyodide } = await import(pathToFileURL(join(opts.pyodide, "pyodide.mjs")).href);
  const toStderr = (line) => process.stderr.write(line + "\n");   // stdout is the protocol's
  const { pyodide, info } = await bridge.startEngine(loadPyodide, {
    indexURL: opts.pyodide + "/", origin: opts.origin, status: log,
    pyodideOptions: { stdout: toStderr, stderr: toStderr },
  });
  if (info.gpu_error) {
    reply({ id: 0, ok: false, error: info.gpu_error });
    process.exit(1);
  }
  // The checkout, through Node's file system (NODEFS), at the same path in Pyodide's: snippets
  // that load a host folder (tools/device_checks.py's decode checks: load_model_local on
  // tests/fixtures/models/...) run here as on the native backend. No tab has this; a failed
  // mount only costs those snippets, so it is logged, not fatal.
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
  try {
    pyodide.FS.mkdirTree(repo);
    pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: repo }, repo);
  } catch (e) {
    log(`could not mount ${repo} in Pyodide's file system: ${e}`);
  }
  info.vulkan_icd = icd;
  info.node = `${process.version} (${process.execPath})`;
  reply({ id: 0, ok: true, result: info });

  const rpc = pyodide.pyimport("py_engine.rpc");
  const lines = createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {       // one request at a time, as the tab's engine does
    if (!line.trim()) continue;
    let id = null;
    try {
      const req = JSON.parse(line);
      id = req.id;
      const out = await rpc.run_snippet(req.code, JSON.stringify(req.args || {}));
      reply({ id, ok: true, result: JSON.parse(out) });
    } catch (err) {
      reply({ id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  }
  process.exit(0);     // stdin closed: the caller is done (Dawn's threads would keep Node alive)
}

main().catch((err) => {
  reply({ id: 0, ok: false, error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
