// The engine's Web Worker: owns Pyodide and the WebGPU device, so pages never freeze.
// JS here only boots Python and offers a few byte-moving helpers (fetch ranges, encode a
// recorded batch of dispatches in one bridge call); every decision is made in py_engine.
import { loadPyodide } from "/pyodide/pyodide.mjs";

let pyodide = null;
let booted = null;

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const status = (text, extra) => post({ event: "status", text, ...(extra || {}) });

// ---- helpers called from Python (py_engine.gpu.browser) ------------------------------
// Encode a list of commands into ONE command encoder and submit it. Each command is
//   [0, pipeline, bindGroup, x, y, z]            a compute dispatch
//   [1, srcBuf, srcOff, dstBuf, dstOff, size]     a buffer copy (ends the current pass)
// Doing this loop in JS costs one bridge crossing per batch instead of three per dispatch.
function encodeAndSubmit(device, commands) {
  const enc = device.createCommandEncoder();
  let pass = null;
  for (let i = 0; i < commands.length; i++) {
    const c = commands[i];
    if (c[0] === 0) {
      if (pass === null) pass = enc.beginComputePass();
      pass.setPipeline(c[1]);
      pass.setBindGroup(0, c[2]);
      pass.dispatchWorkgroups(c[3], c[4], c[5]);
    } else {
      if (pass !== null) { pass.end(); pass = null; }
      enc.copyBufferToBuffer(c[1], c[2], c[3], c[4], c[5]);
    }
  }
  if (pass !== null) pass.end();
  device.queue.submit([enc.finish()]);
}

// Read `size` bytes at `offset` of a STORAGE buffer through a MAP_READ staging buffer.
async function readBuffer(device, buffer, offset, size, staging) {
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
async function fetchRangeToBuffers(device, url, start, end, targets) {
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
  for (const [buffer, offset, a, b] of targets) {
    let piece = data.subarray(a, b);
    if (piece.byteLength % 4 !== 0) {  // writeBuffer sizes are multiples of 4: pad the tail
      const padded = new Uint8Array(piece.byteLength + 4 - (piece.byteLength % 4));
      padded.set(piece);
      piece = padded;
    }
    device.queue.writeBuffer(buffer, offset, piece);
  }
  return end - start;
}

// GPU errors that nobody scoped: kept until Python asks (py_engine.gpu checks after reads).
const gpuErrors = [];
function watchDevice(device) {
  device.addEventListener("uncapturederror", (ev) => gpuErrors.push(ev.error.message));
  device.lost.then((info) => gpuErrors.push(`device lost (${info.reason}): ${info.message}`));
}
function takeGpuErrors() { return gpuErrors.splice(0, gpuErrors.length); }

self.mwGpu = { encodeAndSubmit, readBuffer, fetchRangeToBuffers, watchDevice, takeGpuErrors,
               status };

// ---- boot -----------------------------------------------------------------------------
async function boot() {
  const t0 = performance.now();
  status("loading Pyodide");
  pyodide = await loadPyodide({ indexURL: "/pyodide/" });
  status("loading engine");
  const manifest = await (await fetch("/engine/manifest.json", { cache: "no-store" })).json();
  const zip = await (await fetch(manifest.url)).arrayBuffer();
  pyodide.unpackArchive(zip, "zip", { extractDir: "/engine" });
  pyodide.runPython("import sys; sys.path.insert(0, '/engine')");
  status("starting GPU");
  const rpc = pyodide.pyimport("py_engine.rpc");
  const info = JSON.parse(await rpc.boot());
  info.engine = manifest.hash;
  info.boot_ms = performance.now() - t0;
  return info;
}

self.onmessage = async (ev) => {
  const { id, op } = ev.data;
  try {
    if (op === "boot") {
      booted = booted || boot();
      post({ id, ok: true, result: await booted });
    } else if (op === "run") {
      await booted;
      const rpc = pyodide.pyimport("py_engine.rpc");
      const out = await rpc.run_snippet(ev.data.code, JSON.stringify(ev.data.args || {}));
      post({ id, ok: true, result: JSON.parse(out) });
    } else {
      throw new Error(`unknown op ${op}`);
    }
  } catch (err) {
    post({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
};
