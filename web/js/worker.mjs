// The engine's Web Worker: owns Pyodide and the WebGPU device, so pages never freeze.
// JS here only boots Python and offers a few byte-moving helpers (fetch ranges, encode a
// recorded batch of dispatches in one bridge call); every decision is made in py_engine.
// The GPU helpers and the boot sequence live in gpu_bridge.mjs, which the Dawn harness under
// Node (tools/dawn/engine_host.mjs) imports too, so `mambaweb bench --dawn` runs this code.
import { loadPyodide } from "/pyodide/pyodide.mjs";
import { encodeAndSubmit, readBuffer, fetchRangeToBuffers, writePieces, watchDevice, takeGpuErrors,
         takeSubmitTimes, startEngine, onDeviceLost, loseDevice } from "./gpu_bridge.mjs";
import { installWeightCache } from "./weight_cache.mjs";

let pyodide = null;
let booted = null;

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const status = (text, extra) => post({ event: "status", text, ...(extra || {}) });

// Engine -> page events (py_engine/app/events.py): data arrives as a JSON string.
self.mwEmit = (name, json) => post({ event: name, ...JSON.parse(json) });

self.mwGpu = { encodeAndSubmit, readBuffer, fetchRangeToBuffers, watchDevice, takeGpuErrors,
               takeSubmitTimes, status };

// ---- training helpers (py_engine.train.checkpoint / session) ---------------------------
// Files the page hands to the engine (corpus files, a tokenizer.json, a saved state) and
// files the engine hands back (downloads) travel as Blobs through the trainPut / trainTake ops,
// never through Python: Python sees them as JS objects and reads only what it needs.
const trStore = new Map();

// CRC-32 (IEEE), for the MBJS trailer of files assembled here.
let trCrcTable = null;
function trCrc32(bytes, crc) {
  if (trCrcTable === null) {
    trCrcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
      trCrcTable[n] = c >>> 0;
    }
  }
  let c = (crc ^ 0xFFFFFFFF) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = trCrcTable[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}

// Assemble a file from `parts`: [0, Uint8Array] bytes made in Python, or
// [1, gpuBuffer, offset, size] a GPU range read through a staging buffer. The bytes go
// straight into a Blob, or into an OPFS file (`opts.opfs` = "dir/name"; written through a
// swap file, so a crash mid-write leaves the previous file intact). `opts.crc`: append the
// MBJS trailer ("EVCR" + CRC-32 of everything before it); `opts.checksum`: only compute the
// CRC-32 of what was written (the checksummed autosave). Returns {blob?, size, crc}.
async function trWriteParts(device, parts, opts) {
  opts = opts || {};
  const list = [];
  for (const p of parts) list.push(p[0] === 0 ? [0, new Uint8Array(p[1]).slice()] : p);
  let writable = null;
  if (opts.opfs) writable = await (await trOpfsHandle(opts.opfs, true)).createWritable();
  const chunks = [];
  let size = 0, crc = 0;
  const emitChunk = async (u8) => {
    if (opts.crc || opts.checksum) crc = cvCrc32(u8, crc);
    size += u8.byteLength;
    if (writable) await writable.write(u8); else chunks.push(u8);
  };
  const CHUNK = 8 << 20;
  let staging = null;
  try {
    for (const p of list) {
      if (p[0] === 0) { await emitChunk(p[1]); continue; }
      const [, buffer, offset, total] = p;
      for (let done = 0; done < total; done += CHUNK) {
        const n = Math.min(CHUNK, total - done);
        const padded = (n + 3) & ~3;
        if (staging === null || staging.size < padded) {
          if (staging) staging.destroy();
          staging = device.createBuffer({ size: (Math.max(padded, Math.min(CHUNK, total)) + 3) & ~3,
                                          usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        }
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(buffer, offset + done, staging, 0, padded);
        device.queue.submit([enc.finish()]);
        await staging.mapAsync(GPUMapMode.READ, 0, padded);
        const copy = new Uint8Array(staging.getMappedRange(0, padded).slice(0, n));
        staging.unmap();
        await emitChunk(copy);
      }
    }
    if (opts.crc) {
      const t = new Uint8Array(8);
      const dv = new DataView(t.buffer);
      dv.setUint32(0, 0x52435645, true);
      dv.setUint32(4, crc, true);
      size += 8;
      if (writable) await writable.write(t); else chunks.push(t);
    }
    if (writable) { await writable.close(); writable = null; }
  } finally {
    if (staging) staging.destroy();
    if (writable) await writable.abort().catch(() => {});
  }
  return { blob: opts.opfs ? null : new Blob(chunks, { type: opts.type || "application/octet-stream" }),
           size, crc };
}

// Origin-private file system: "dir/name" paths under navigator.storage.getDirectory().
async function trOpfsHandle(path, create) {
  if (!(self.navigator && navigator.storage && navigator.storage.getDirectory)) {
    throw new Error("this browser offers no origin-private file system (OPFS)");
  }
  let dir = await navigator.storage.getDirectory();
  const names = path.split("/");
  for (const d of names.slice(0, -1)) dir = await dir.getDirectoryHandle(d, { create });
  return dir.getFileHandle(names[names.length - 1], { create });
}
async function trOpfsFile(path) {
  try { return await (await trOpfsHandle(path, false)).getFile(); } catch (e) {
    if (e && (e.name === "NotFoundError" || e.name === "TypeMismatchError")) return null;
    throw e;
  }
}
async function trOpfsWrite(path, data) {
  const w = await (await trOpfsHandle(path, true)).createWritable();
  try { await w.write(data instanceof Blob ? data : new Uint8Array(data).slice()); await w.close(); }
  catch (e) { await w.abort().catch(() => {}); throw e; }
}
async function trOpfsRemove(path) {
  let dir = await navigator.storage.getDirectory();
  const names = path.split("/");
  try {
    for (const d of names.slice(0, -1)) dir = await dir.getDirectoryHandle(d);
    await dir.removeEntry(names[names.length - 1], { recursive: true });
  } catch (e) { if (!e || e.name !== "NotFoundError") throw e; }
}
// {size, crc} (CRC-32 of the bytes as stored now) of an OPFS file, or null when it is missing:
// the checksummed autosave (py_engine/train/autosave.py) verifies files with it.
async function trOpfsChecksum(path) {
  const f = await trOpfsFile(path);
  if (f === null) return null;
  let crc = 0;
  for (let a = 0; a < f.size; a += 8 << 20) {
    crc = cvCrc32(new Uint8Array(await f.slice(a, Math.min(f.size, a + (8 << 20))).arrayBuffer()), crc);
  }
  return { size: f.size, crc };
}
async function trBlobBytes(blob, start, end) {
  return new Uint8Array(await blob.slice(start, end).arrayBuffer());
}

// Progress events from a training session: posted to the page as {event: "train", json}.
const trEmit = (json) => post({ event: "train", json });

// One .zip of [name, Blob] pairs under `folder/` (the pretrain page's HF folder, a LoRA adapter):
// the convert page's store-only writer (cvZip below), with each Blob's CRC read here.
async function trZip(entries, folder) {
  const list = [];
  for (const [name, blob] of entries) {
    let crc = 0;
    for (let a = 0; a < blob.size; a += CV_CHUNK) {
      crc = cvCrc32(new Uint8Array(await blob.slice(a, a + CV_CHUNK).arrayBuffer()), crc);
    }
    list.push({ name, blob, size: blob.size, crc });
  }
  return cvZip(list, folder);
}

self.mwTrain = { store: trStore, writeParts: trWriteParts, opfsFile: trOpfsFile,
                 opfsWrite: trOpfsWrite, opfsRemove: trOpfsRemove, blobBytes: trBlobBytes,
                 opfsChecksum: trOpfsChecksum,
                 emit: trEmit, crc32: trCrc32, zip: trZip };
self.mwOps = Object.assign(self.mwOps || {}, {
  // {key, value}: a Blob/File (or a list of them) for Python to read
  trainPut: ({ key, value }) => { trStore.set(key, value); return null; },
  // {key}: a Blob Python left for the page (a download); removed from the store
  trainTake: ({ key }) => { const v = trStore.has(key) ? trStore.get(key) : null; trStore.delete(key); return v; },
});

// ---- a lost GPU device (issue 13) ------------------------------------------------------
// The page hears {event: "gpu-lost", reason, message}, then {event: "gpu-restored", adapter}
// once py_engine.rpc.reinit() has a new adapter and device (or {event: "gpu-failed", error});
// it then reloads its model or resumes its run from the autosave. No page reload.
onDeviceLost(async (info) => {
  post({ event: "gpu-lost", ...info });
  try {
    const out = JSON.parse(await pyodide.pyimport("py_engine.rpc").reinit(JSON.stringify(info)));
    post({ event: out.gpu_error ? "gpu-failed" : "gpu-restored", ...out });
  } catch (err) {
    post({ event: "gpu-failed", gpu_error: String(err && err.message ? err.message : err) });
  }
});
self.mwOps = Object.assign(self.mwOps || {}, {
  // test hook: destroy the engine's GPU device, as a driver reset or a laptop switching GPUs would
  debugLoseDevice: () => loseDevice(),
  // test hook: destroy the pool's free buffers (py_engine.rpc.empty_pool), so live-buffer
  // counts taken around a load are not hidden by reuse; {emptied: {buffers, bytes}, stats}
  debugEmptyPool: async () => { await booted; return JSON.parse(pyodide.pyimport("py_engine.rpc").empty_pool()); },
});

// ---- boot -----------------------------------------------------------------------------
async function boot() {
  const started = await startEngine(loadPyodide, { indexURL: "/pyodide/", status });
  pyodide = started.pyodide;
  return started.info;
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
    } else if (self.mwOps && Object.hasOwn(self.mwOps, op)) {
      // Ops registered by feature sections (training store, convert page file registry).
      post({ id, ok: true, result: await self.mwOps[op](ev.data) });
    } else if (op === "cancel") {
      // Runs while a generation is suspended on a GPU await: Python sees the flag next token.
      pyodide.pyimport("py_engine.app.generate_session").request_cancel();
      post({ id, ok: true, result: null });
    } else {
      throw new Error(`unknown op ${op}`);
    }
  } catch (err) {
    post({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
};

// =======================================================================================
// ---- convert page (web/js/convert_page.js + py_engine/io/convert_plan.py) -------------
// Dropped Files live in a registry here; Python refers to them by id. Python reads only
// small header slices (readSlice) and asks for two reductions over big ranges (crc32Range,
// maxAbsRanges); the plan it returns is executed here by convertExecute, one tensor (or
// 16 MiB chunk) at a time, into output Blobs: plain copies stay lazy slices of the dropped
// File, converted chunks are handed to the browser's blob store as they are made, so the
// input is never held twice. Dtype rounding happens here, on typed arrays, bit-identical
// to tools/convert_host.py (and torch 2.13 CPU): round to nearest even; NaN -> 0xFFFF for
// bf16, sign | 0x7E00 | top payload bits for f16. Little-endian, as every WebGPU platform.
const cvFiles = new Map();
let cvNextId = 1;
let cvCancelled = false;
const CV_CHUNK = 16 << 20;                       // bytes of input per step (multiple of 4)
const CV_WIDTH = { F32: 4, F16: 2, BF16: 2 };

function cvFile(id) {
  const f = cvFiles.get(id);
  if (!f) throw new Error(`convert: no dropped file ${id} (drop the files again)`);
  return f;
}

async function cvRead(id, start, end) {
  const f = cvFile(id);
  if (!(start >= 0 && start <= end && end <= f.size)) {
    throw new Error(`convert: bytes ${start}-${end} lie outside ${f.name} (${f.size} bytes)`);
  }
  const u8 = new Uint8Array(await f.slice(start, end).arrayBuffer());
  if (u8.byteLength !== end - start) {
    throw new Error(`convert: ${f.name}: read ${u8.byteLength} of ${end - start} bytes ` +
                    "(file changed on disk?)");
  }
  return u8;
}

// CRC-32 (IEEE, zlib's), slice-by-8. crc32(u8, crc) continues a running CRC like zlib.crc32.
const CV_CRC = (() => {
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) { c = t[c & 0xff] ^ (c >>> 8); t[k * 256 + n] = c; }
  }
  return t;
})();
function cvCrc32(u8, crc = 0) {
  const T = CV_CRC;
  let c = (crc ^ 0xFFFFFFFF) >>> 0;
  let i = 0;
  const n = u8.length;
  for (; i + 8 <= n; i += 8) {
    const a = c ^ (u8[i] | (u8[i + 1] << 8) | (u8[i + 2] << 16) | (u8[i + 3] << 24));
    c = T[1792 + (a & 0xff)] ^ T[1536 + ((a >>> 8) & 0xff)] ^ T[1280 + ((a >>> 16) & 0xff)] ^
        T[1024 + (a >>> 24)] ^ T[768 + u8[i + 4]] ^ T[512 + u8[i + 5]] ^ T[256 + u8[i + 6]] ^
        T[u8[i + 7]];
  }
  for (; i < n; i++) c = T[(c ^ u8[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}

async function cvCrc32Range(id, start, end) {
  let crc = 0;
  for (let a = start; a < end; a += CV_CHUNK) crc = cvCrc32(await cvRead(id, a, Math.min(end, a + CV_CHUNK)), crc);
  return crc;
}

// f16 bits -> f32 bits, exact (NaN payloads kept, as numpy's software path does).
let CV_F16_TO_F32 = null;
function cvF16Table() {
  if (CV_F16_TO_F32) return CV_F16_TO_F32;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = (h & 0x8000) << 16, e = (h >>> 10) & 0x1f;
    let m = h & 0x3ff;
    if (e === 0x1f) t[h] = s | 0x7f800000 | (m << 13);
    else if (e !== 0) t[h] = s | ((e + 112) << 23) | (m << 13);
    else if (m === 0) t[h] = s;
    else {
      let e2 = 113;
      while (!(m & 0x400)) { m <<= 1; e2--; }
      t[h] = s | (e2 << 23) | ((m & 0x3ff) << 13);
    }
  }
  return (CV_F16_TO_F32 = t);
}

// Raw little-endian bytes (offset 0 of their own buffer) -> Uint32Array of f32 bit patterns.
function cvWiden(u8, dt) {
  if (dt === "F32") return new Uint32Array(u8.buffer, u8.byteOffset, u8.byteLength >>> 2);
  const h = new Uint16Array(u8.buffer, u8.byteOffset, u8.byteLength >>> 1);
  const out = new Uint32Array(h.length);
  if (dt === "BF16") { for (let i = 0; i < h.length; i++) out[i] = h[i] << 16; return out; }
  if (dt === "F16") { const t = cvF16Table(); for (let i = 0; i < h.length; i++) out[i] = t[h[i]]; return out; }
  throw new Error(`convert: cannot read dtype ${dt}`);
}

function cvF32ToBf16(u) {
  if ((u & 0x7fffffff) > 0x7f800000) return 0xffff;             // NaN: torch CPU writes 0xFFFF
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;      // RNE (wraps like uint32)
}
function cvF32ToF16(u) {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00 | ((u >>> 13) & 0x3ff);   // NaN, quiet, payload kept
  if (a >= 0x477ff000) return sign | 0x7c00;                      // >= 65520 rounds to inf
  if (a >= 0x38800000) {                                           // normal half
    let h = (a - 0x38000000) >>> 13;
    const rem = a & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h += 1;
    return sign | h;
  }
  if (a < 0x33000000) return sign;                                 // below half the least subnormal
  const e = a >>> 23, m = (a & 0x7fffff) | 0x800000, shift = 126 - e;   // subnormal half
  let h = m >>> shift;
  const rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1))) h += 1;
  return sign | h;
}

// Uint32Array of f32 bits -> Uint8Array of dt bytes. (Loops read an Int32Array view so V8
// stays on int32 arithmetic; `>>> 16` wraps the sum mod 2^32 exactly as numpy's uint32 does.)
function cvNarrow(bits, dt) {
  if (dt === "F32") return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
  const s32 = new Int32Array(bits.buffer, bits.byteOffset, bits.length);
  const out = new Uint16Array(bits.length);
  if (dt === "BF16") {
    for (let i = 0; i < s32.length; i++) {
      const u = s32[i];
      out[i] = (u & 0x7fffffff) > 0x7f800000 ? 0xffff : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  } else if (dt === "F16") {
    for (let i = 0; i < s32.length; i++) out[i] = cvF32ToF16(s32[i] >>> 0);
  } else {
    throw new Error(`convert: cannot write dtype ${dt}`);
  }
  return new Uint8Array(out.buffer);
}

function cvFlipRows(bits, cols) {
  for (let r = 0; r < bits.length; r += cols) {
    for (let i = r, j = r + cols - 1; i < j; i++, j--) { const t = bits[i]; bits[i] = bits[j]; bits[j] = t; }
  }
}

async function cvMaxAbsRanges(id, ranges, dt) {
  const out = [];
  for (const [start, end] of ranges) {
    let m = 0;
    for (let a = start; a < end; a += CV_CHUNK) {
      const f = new Float32Array(cvWiden(await cvRead(id, a, Math.min(end, a + CV_CHUNK)), dt).buffer);
      for (let i = 0; i < f.length; i++) {
        const v = Math.abs(f[i]);
        if (v > m || v !== v) { m = v; if (v !== v) break; }
      }
      if (m !== m) break;
    }
    out.push(m !== m ? "nan" : m);       // Python reads float("nan"): nonzero, as numpy's max
  }
  return out;
}

function cvB64(s) {
  const bin = atob(s);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return u8;
}

// A stored (uncompressed) zip of named Blobs with known CRCs, ZIP64 where sizes need it.
function cvZip(entries, folder) {
  const enc = new TextEncoder();
  const now = new Date();
  const dosTime = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const dosDate = ((Math.max(now.getFullYear(), 1980) - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  const BIG = 0xffffffff;
  const parts = [], central = [];
  let offset = 0;
  for (const e of entries) {
    const name = enc.encode(folder ? `${folder}/${e.name}` : e.name);
    const z64 = e.size >= BIG;
    const local = new DataView(new ArrayBuffer(30 + name.length + (z64 ? 20 : 0)));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, z64 ? 45 : 20, true);
    local.setUint16(6, 0x0800, true);                // UTF-8 names
    local.setUint16(8, 0, true);                     // stored
    local.setUint16(10, dosTime, true);
    local.setUint16(12, dosDate, true);
    local.setUint32(14, e.crc, true);
    local.setUint32(18, z64 ? BIG : e.size, true);
    local.setUint32(22, z64 ? BIG : e.size, true);
    local.setUint16(26, name.length, true);
    local.setUint16(28, z64 ? 20 : 0, true);
    new Uint8Array(local.buffer).set(name, 30);
    if (z64) {
      const x = 30 + name.length;
      local.setUint16(x, 1, true); local.setUint16(x + 2, 16, true);
      local.setBigUint64(x + 4, BigInt(e.size), true); local.setBigUint64(x + 12, BigInt(e.size), true);
    }
    parts.push(local.buffer, e.blob);
    const off64 = offset >= BIG;
    const extra = (z64 ? 16 : 0) + (off64 ? 8 : 0);
    const c = new DataView(new ArrayBuffer(46 + name.length + (extra ? 4 + extra : 0)));
    c.setUint32(0, 0x02014b50, true);
    c.setUint16(4, (3 << 8) | 45, true);
    c.setUint16(6, z64 || off64 ? 45 : 20, true);
    c.setUint16(8, 0x0800, true);
    c.setUint16(10, 0, true);
    c.setUint16(12, dosTime, true);
    c.setUint16(14, dosDate, true);
    c.setUint32(16, e.crc, true);
    c.setUint32(20, z64 ? BIG : e.size, true);
    c.setUint32(24, z64 ? BIG : e.size, true);
    c.setUint16(28, name.length, true);
    c.setUint16(30, extra ? 4 + extra : 0, true);
    c.setUint32(38, (0o100644 << 16) >>> 0, true);   // a regular file, rw-r--r--
    c.setUint32(42, off64 ? BIG : offset, true);
    new Uint8Array(c.buffer).set(name, 46);
    if (extra) {
      let x = 46 + name.length;
      c.setUint16(x, 1, true); c.setUint16(x + 2, extra, true); x += 4;
      if (z64) { c.setBigUint64(x, BigInt(e.size), true); c.setBigUint64(x + 8, BigInt(e.size), true); x += 16; }
      if (off64) c.setBigUint64(x, BigInt(offset), true);
    }
    central.push(c.buffer);
    offset += local.byteLength + e.size;
  }
  const cdSize = central.reduce((s, b) => s + b.byteLength, 0);
  const tail = [];
  const need64 = offset >= BIG || cdSize >= BIG || entries.length >= 0xffff;
  if (need64) {
    const r = new DataView(new ArrayBuffer(56 + 20));
    r.setUint32(0, 0x06064b50, true);
    r.setBigUint64(4, 44n, true);
    r.setUint16(12, (3 << 8) | 45, true);
    r.setUint16(14, 45, true);
    r.setBigUint64(24, BigInt(entries.length), true);
    r.setBigUint64(32, BigInt(entries.length), true);
    r.setBigUint64(40, BigInt(cdSize), true);
    r.setBigUint64(48, BigInt(offset), true);
    r.setUint32(56, 0x07064b50, true);               // locator
    r.setBigUint64(64, BigInt(offset + cdSize), true);
    r.setUint32(72, 1, true);
    tail.push(r.buffer);
  }
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, Math.min(entries.length, 0xffff), true);
  end.setUint16(10, Math.min(entries.length, 0xffff), true);
  end.setUint32(12, Math.min(cdSize, BIG), true);
  end.setUint32(16, Math.min(offset, BIG), true);
  tail.push(end.buffer);
  return new Blob([...parts, ...central, ...tail], { type: "application/zip" });
}

// Run a plan from py_engine.io.convert_plan.plan(); posts {event: "convert-progress"}.
// The plan is first unrolled into steps of at most CV_CHUNK input bytes; the reads of the
// next CV_AHEAD steps are in flight while one is converted, so disk and CPU overlap.
const CV_AHEAD = 2;
async function cvExecute({ plan }) {
  cvCancelled = false;
  const total = plan.total || 1;
  let done = 0, lastPost = 0;
  const progress = (label, force) => {
    const now = performance.now();
    if (force || now - lastPost > 100) {
      lastPost = now;
      post({ event: "convert-progress", done, total, label });
    }
  };
  const outputs = [];
  const steps = [];                     // {read: [id, start, end] | null, run(raw), label}
  for (const out of plan.outputs) {
    const st = { name: out.name, parts: [], crc: 0, size: 0 };
    const emit = (u8) => { st.crc = cvCrc32(u8, st.crc); st.size += u8.byteLength; done += u8.byteLength; };
    const add = (read, run, op) => steps.push({ read, run, label: `${out.name}: ${op.label || op.op}` });
    for (const op of out.ops) {
      if (op.op === "bytes") {
        add(null, () => { const u8 = cvB64(op.b64); emit(u8); st.parts.push(u8); }, op);
      } else if (op.op === "copy") {
        cvFile(op.src);
        for (let a = op.start; a < op.end; a += CV_CHUNK) {
          add([op.src, a, Math.min(op.end, a + CV_CHUNK)], (raw) => emit(raw), op);
        }
        add(null, () => st.parts.push(cvFile(op.src).slice(op.start, op.end)), op);  // lazy: no copy
      } else if (op.op === "cast" || op.op === "flip") {
        const inW = CV_WIDTH[op.from];
        if (!inW || !CV_WIDTH[op.to]) throw new Error(`convert: cannot cast ${op.from} to ${op.to}`);
        const row = op.op === "flip" ? op.cols * inW : inW;
        if ((op.end - op.start) % row) throw new Error(`convert: ${op.label}: ${op.end - op.start} bytes are not whole rows`);
        const step = Math.max(row, Math.floor(CV_CHUNK / row) * row);
        for (let a = op.start; a < op.end; a += step) {
          add([op.src, a, Math.min(op.end, a + step)], (raw) => {
            const bits = cvWiden(raw, op.from);
            if (op.op === "flip") cvFlipRows(bits, op.cols);
            const u8 = cvNarrow(bits, op.to);
            emit(u8);
            st.parts.push(new Blob([u8]));     // into the browser's blob store (may go to disk)
          }, op);
        }
      } else if (op.op === "zeros") {
        for (let left = op.n; left > 0; left -= CV_CHUNK) {
          const n = Math.min(left, CV_CHUNK);
          add(null, () => { const u8 = new Uint8Array(n); emit(u8); st.parts.push(new Blob([u8])); }, op);
        }
      } else if (op.op === "crc_trailer") {
        add(null, () => {
          const t = new DataView(new ArrayBuffer(8));
          t.setUint32(0, 0x52435645, true);          // "EVCR"
          t.setUint32(4, st.crc, true);              // CRC-32 of everything before it
          const u8 = new Uint8Array(t.buffer);
          emit(u8);
          st.parts.push(u8);
        }, op);
      } else {
        throw new Error(`convert: unknown plan op ${op.op}`);
      }
    }
    add(null, () => {
      const blob = new Blob(st.parts, { type: out.name.endsWith(".json") ? "application/json" : "application/octet-stream" });
      if (blob.size !== out.size || st.size !== out.size) {
        throw new Error(`convert: ${out.name} came out ${blob.size} bytes, the plan says ${out.size}`);
      }
      outputs.push({ name: out.name, blob, size: blob.size, crc: st.crc });
      st.parts = null;
    }, { op: "done" });
  }
  const inflight = [];
  let next = 0;
  const fetchNext = () => {
    const s = steps[next++];
    const p = s.read ? cvRead(...s.read) : Promise.resolve(null);
    p.catch(() => {});                   // surfaced when awaited, in order
    inflight.push(p);
  };
  for (let i = 0; i < steps.length; i++) {
    while (next < steps.length && next <= i + CV_AHEAD) fetchNext();
    const raw = await inflight.shift();
    if (cvCancelled) throw new Error("conversion cancelled");
    steps[i].run(raw);
    progress(steps[i].label);
  }
  const download = plan.archive && plan.archive.kind === "zip"
    ? { name: plan.download, blob: cvZip(outputs, plan.archive.folder) }
    : { name: plan.download, blob: outputs[0].blob };
  progress("done", true);
  return { outputs: outputs.map((o) => ({ name: o.name, blob: o.blob, size: o.size })), download };
}

// The generate page loads a model from picked files through the same registry: tensor
// ranges go File.slice -> ArrayBuffer -> writeBuffer (py_engine/io/byte_sources.py).
async function fileRangeToBuffers(device, id, start, end, targets) {
  writePieces(device, await cvRead(id, start, end), targets);
  return end - start;
}
self.mwGpu.fileRangeToBuffers = fileRangeToBuffers;

self.mwConvert = { readSlice: cvRead, crc32Range: cvCrc32Range, maxAbsRanges: cvMaxAbsRanges,
                   fileSize: (id) => cvFile(id).size };
self.mwOps = Object.assign(self.mwOps || {}, {
  // {files: [{file, path}]} -> [{id, path, size}]
  convertPutFiles: ({ files }) => files.map(({ file, path }) => {
    const id = `file${cvNextId++}`;
    cvFiles.set(id, file);
    return { id, path: path || file.name, size: file.size };
  }),
  convertForgetFiles: ({ ids }) => { if (ids) ids.forEach((i) => cvFiles.delete(i)); else cvFiles.clear(); return true; },
  convertExecute: cvExecute,
  convertCancel: () => { cvCancelled = true; return true; },
});

// ---- the cache of fetched weights (web/js/weight_cache.mjs, py_engine/io/cached_source.py) ----
installWeightCache(self, { crc32: cvCrc32 });
