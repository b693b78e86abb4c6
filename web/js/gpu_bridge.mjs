// The engine's JS bridge, shared by the tab's Worker (web/js/worker.mjs) and the Dawn harness
// under Node (tools/dawn/engine_host.mjs, `mambaweb bench --dawn`), so both run the same code:
// the byte-moving helpers Python calls (py_engine.gpu.browser, as `mwGpu.*`) and the boot
// sequence. Nothing here may assume a Worker, a page or a DOM: only fetch, WebGPU's globals
// (GPUMapMode) and Pyodide.

// Encode a list of commands into ONE command encoder and submit it. Each command is
//   [0, pipeline, bindGroup, x, y, z]            a compute dispatch
//   [1, srcBuf, srcOff, dstBuf, dstOff, size]     a buffer copy (ends the current pass)
// Doing this loop in JS costs one bridge crossing per batch instead of three per dispatch.
// Where the host's time goes is counted as it runs (takeSubmitTimes): the loop's WebGPU calls,
// finish() (Dawn validates the commands) and submit() (a native Dawn hands them to the driver;
// Chrome only serialises them for its GPU process) -- a few clock reads per batch.
const submitTimes = { encode_ms: 0, finish_ms: 0, submit_ms: 0, batches: 0, commands: 0 };

export function encodeAndSubmit(device, commands, count = -1) {
  // count >= 0: only the first `count` commands (a replayed recording's prefix)
  const n = count >= 0 ? Math.min(count, commands.length) : commands.length;
  const t0 = performance.now();
  const enc = device.createCommandEncoder();
  let pass = null;
  let pipeline = null;   // the pass's pipeline: set again only where it changes (a call fewer
                         // for each of the sampler's consecutive passes of one entry point)
  for (let i = 0; i < n; i++) {
    const c = commands[i];
    if (c[0] === 0) {
      if (pass === null) { pass = enc.beginComputePass(); pipeline = null; }
      if (c[1] !== pipeline) { pass.setPipeline(c[1]); pipeline = c[1]; }
      pass.setBindGroup(0, c[2]);
      pass.dispatchWorkgroups(c[3], c[4], c[5]);
    } else {
      if (pass !== null) { pass.end(); pass = null; }
      enc.copyBufferToBuffer(c[1], c[2], c[3], c[4], c[5]);
    }
  }
  if (pass !== null) pass.end();
  const t1 = performance.now();
  const buffer = enc.finish();
  const t2 = performance.now();
  device.queue.submit([buffer]);
  const t = submitTimes;
  t.submit_ms += performance.now() - t2;
  t.finish_ms += t2 - t1;
  t.encode_ms += t1 - t0;
  t.batches += 1;
  t.commands += n;
}

// The host time encodeAndSubmit spent since the last call, as JSON (milliseconds and counts).
export function takeSubmitTimes() {
  const out = JSON.stringify(submitTimes);
  for (const k of Object.keys(submitTimes)) submitTimes[k] = 0;
  return out;
}

// Read `size` bytes at `offset` of a STORAGE buffer through a MAP_READ staging buffer.
export async function readBuffer(device, buffer, offset, size, staging) {
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, offset, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ, 0, size);
  const copy = new Uint8Array(staging.getMappedRange(0, size).slice(0));
  staging.unmap();
  return copy;
}

// Stream one byte range of a URL into GPU buffers: fetch(Range) -> ArrayBuffer ->
// writeBuffer, so the bytes never enter Python's heap. `targets` lists the pieces of the
// range: [gpuBuffer, bufferOffset, relStart, relEnd] (relative to `start`).
export async function fetchRangeToBuffers(device, url, start, end, targets) {
  const resp = await fetch(url, { headers: { Range: `bytes=${start}-${end - 1}` } });
  if (resp.status !== 206 && resp.status !== 200) {
    throw new Error(`GET ${url} bytes ${start}-${end - 1}: HTTP ${resp.status}`);
  }
  let data = new Uint8Array(await resp.arrayBuffer());
  if (resp.status === 200) data = data.subarray(start, end);  // server ignored Range
  if (data.byteLength !== end - start) {
    throw new Error(`GET ${url} bytes ${start}-${end - 1}: got ${data.byteLength} bytes ` +
                    `instead of ${end - start} (file changed or truncated?)`);
  }
  writePieces(device, data, targets);
  return end - start;
}

// targets: [gpuBuffer, bufferOffset, relStart, relEnd] pieces of `data` to write.
export function writePieces(device, data, targets) {
  for (const [buffer, offset, a, b] of targets) {
    let piece = data.subarray(a, b);
    if (piece.byteLength % 4 !== 0) {  // writeBuffer sizes are multiples of 4: pad the tail
      const padded = new Uint8Array(piece.byteLength + 4 - (piece.byteLength % 4));
      padded.set(piece);
      piece = padded;
    }
    device.queue.writeBuffer(buffer, offset, piece);
  }
}

// GPU errors that nobody scoped: kept until Python asks (py_engine.gpu checks after reads).
const gpuErrors = [];
let lostListener = null;
let watched = null;            // the device the engine uses now (the debug hook destroys it)
export function watchDevice(device) {
  watched = device;
  gpuErrors.length = 0;          // a new device starts clean: an old one's errors are not its own
  device.addEventListener("uncapturederror", (ev) => {
    if (device !== watched) return;
    // out-of-memory is the person's to fix (smaller model or format), not a bug: Python
    // (py_engine.gpu.browser.OOM_PREFIX) tells it apart by this prefix
    const oom = typeof GPUOutOfMemoryError !== "undefined" && ev.error instanceof GPUOutOfMemoryError;
    gpuErrors.push(oom ? `out-of-memory: ${ev.error.message}` : ev.error.message);
  });
  device.lost.then((info) => {
    if (device === watched) gpuErrors.push(`device lost (${info.reason}): ${info.message}`);
    // only the current device's loss matters (an old one is let go on purpose)
    if (device === watched && lostListener) lostListener({ reason: String(info.reason), message: String(info.message || "") });
  });
}
// fn({reason, message}) runs when the engine's device is lost (the Worker re-initialises).
export function onDeviceLost(fn) { lostListener = fn; }
// Test hook: lose the engine's device as a driver reset would (device.destroy()).
export function loseDevice() { if (watched) watched.destroy(); return watched !== null; }
export function takeGpuErrors() { return gpuErrors.splice(0, gpuErrors.length); }

// Boot Pyodide and the packed engine served at `origin` ("" in the tab: same origin), then
// py_engine.rpc.boot() (which asks navigator.gpu for a device). Returns {pyodide, info}.
export async function startEngine(loadPyodide, { indexURL, origin = "", status = () => {}, pyodideOptions = {} }) {
  const t0 = performance.now();
  status("loading Pyodide");
  const pyodide = await loadPyodide({ indexURL, ...pyodideOptions });
  const t1 = performance.now();
  status("loading engine");
  const manifest = await (await fetch(`${origin}/engine/manifest.json`, { cache: "no-store" })).json();
  const zip = await (await fetch(`${origin}${manifest.url}`)).arrayBuffer();
  pyodide.unpackArchive(zip, "zip", { extractDir: "/engine" });
  pyodide.runPython("import sys; sys.path.insert(0, '/engine')");
  const t2 = performance.now();
  status("starting GPU");
  const rpc = pyodide.pyimport("py_engine.rpc");
  const t3 = performance.now();
  const info = JSON.parse(await rpc.boot());
  info.engine = manifest.hash;
  const t4 = performance.now();
  info.boot_ms = t4 - t0;
  // where a boot's time goes: Pyodide itself, the engine's zip, importing it, the GPU device
  info.boot_split_ms = { pyodide: t1 - t0, engine_zip: t2 - t1, imports: t3 - t2, gpu: t4 - t3 };
  return { pyodide, info };
}
