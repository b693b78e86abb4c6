// The browser's cache of fetched weights (issues 10, 16), in the engine's Worker: weight files
// fetched over HTTP (served models, Hub models by name) are kept in the origin-private file
// system (OPFS) as they stream, so a second load reads them from disk with no range request.
// py_engine/io/cached_source.py calls this as `mwCache.*`; the page asks for the bytes used and
// clears them through the `cacheUsage` / `cacheClear` ops.
//
// One entry per file URL (a Hub URL holds the revision): mambaweb-weights/<sha256(url)>.bin
// holds the file's bytes at their own offsets, only the ranges the loader read; <...>.json
// says {url, validator (ETag, else Last-Modified), size, pieces: [[start, end, crc32]]}.
// An entry is used only while a HEAD of the URL reports the same validator and size; opening
// it re-reads every stored piece and checks its CRC-32 and that the file is long enough, so a
// truncated or damaged entry is dropped and fetched again. The .json is written after the
// bytes are flushed, so a crash leaves at worst bytes the .json does not claim.
// Storage that runs out (QuotaExceededError, or too little room before the first byte) turns
// the file into a plain stream for this load; the handle carries one sentence saying so.
import { writePieces } from "./gpu_bridge.mjs";

const DIR = "mambaweb-weights";
const VERIFY_CHUNK = 8 << 20;
let crc32 = null;               // (u8, crc) -> crc: the Worker's CRC-32 (zlib's), injected
let simulatedQuota = null;      // test hook: bytes this cache may store before writes fail
let simulatedStored = 0;
// url -> a promise that settles when the handle open on it is finished: an OPFS file takes one
// sync access handle at a time, so a second open of the same URL (the page's plan of a model
// racing its load) waits for the first instead of failing
const busyUrls = new Map();

const opfsOk = () => !!(self.navigator && navigator.storage && navigator.storage.getDirectory &&
  self.FileSystemFileHandle && FileSystemFileHandle.prototype.createSyncAccessHandle);

async function cacheDir(create = true) {
  return (await navigator.storage.getDirectory()).getDirectoryHandle(DIR, { create });
}

async function entryName(url) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(url));
  return Array.from(new Uint8Array(digest).slice(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

const fileLabel = (url) => decodeURIComponent(new URL(url).pathname.split("/").pop() || url);

async function readMeta(dir, name) {
  try {
    const f = await (await dir.getFileHandle(`${name}.json`)).getFile();
    return JSON.parse(await f.text());
  } catch (e) { return null; }   // missing or unreadable: no entry
}
async function writeMeta(dir, name, meta) {
  const w = await (await dir.getFileHandle(`${name}.json`, { create: true })).createWritable();
  try { await w.write(JSON.stringify(meta)); await w.close(); }
  catch (e) { await w.abort().catch(() => {}); throw e; }
}
async function removeQuietly(dir, file) {
  try { await dir.removeEntry(file); } catch (e) { /* not there */ }
}

// Is [start, end) inside the union of `pieces` (sorted by start)?
function covered(pieces, start, end) {
  let pos = start;
  for (const [a, b] of pieces) {
    if (a > pos) return false;
    if (b > pos) pos = b;
    if (pos >= end) return true;
  }
  return pos >= end;
}

// null when every piece reads back with its CRC, else why not (one phrase).
function verify(access, pieces) {
  const size = access.getSize();
  const need = pieces.reduce((m, p) => Math.max(m, p[1]), 0);
  if (size < need) return `it was truncated (${size} of ${need} bytes)`;
  const buf = new Uint8Array(Math.min(VERIFY_CHUNK, need || 1));
  for (const [a, b, want] of pieces) {
    let crc = 0;
    for (let at = a; at < b; at += buf.length) {
      const view = buf.subarray(0, Math.min(buf.length, b - at));
      if (access.read(view, { at }) !== view.length) return "it could not be read back";
      crc = crc32(view, crc);
    }
    if (crc !== want) return `its checksum does not match (bytes ${a}-${b - 1} are damaged)`;
  }
  return null;
}

// GET one range (the server may ignore Range and send the whole file: take the slice).
async function fetchRange(url, start, end) {
  const resp = await fetch(url, { headers: { Range: `bytes=${start}-${end - 1}` } });
  if (resp.status !== 206 && resp.status !== 200) {
    throw new Error(`GET ${url} bytes ${start}-${end - 1}: HTTP ${resp.status}`);
  }
  let data = new Uint8Array(await resp.arrayBuffer());
  if (resp.status === 200) data = data.subarray(start, end);
  if (data.byteLength !== end - start) {
    throw new Error(`GET ${url} bytes ${start}-${end - 1}: got ${data.byteLength} bytes ` +
                    `instead of ${end - start} (file changed or truncated?)`);
  }
  return data;
}

function storageSentence(h, err) {
  const what = fileLabel(h.url);
  if (err && err.name === "QuotaExceededError") {
    return `This browser's storage is full, so ${what} streams without being kept for the ` +
      "next load: clear cached models (or other site data) to cache it";
  }
  return `${what} streams without being kept for the next load: this browser's storage ` +
    `refused it (${err && err.message ? err.message : err})`;
}

// Stop caching this file for this load: close and remove the entry, keep streaming.
async function fallBack(h, err) {
  if (!h.notice) h.notice = storageSentence(h, err);
  if (h.access) { try { h.access.close(); } catch (e) { /* closed */ } h.access = null; }
  if (h.name) {
    const dir = await cacheDir();
    await removeQuietly(dir, `${h.name}.json`);
    await removeQuietly(dir, `${h.name}.bin`);
  }
  h.mode = "network";
  h.pieces = [];
  h.dirty = false;
}

// -> a handle for `url`: {url, size (-1: unknown), mode "cache" | "network", ...}.
async function open(url) {
  while (busyUrls.has(url)) await busyUrls.get(url);
  let resolve = null;
  const busy = new Promise((r) => { resolve = r; });
  busyUrls.set(url, busy);
  const release = () => {       // only this open's mark: a later open may hold the URL by then
    if (busyUrls.get(url) === busy) busyUrls.delete(url);
    resolve();
  };
  const h = { release, url, size: -1, validator: "", mode: "network", name: null, access: null,
              pieces: [], dirty: false, notice: null, discarded: null,
              hitBytes: 0, fetchedBytes: 0, storedBytes: 0 };
  try {
    return await openEntry(h, url);
  } catch (err) {               // nothing will finish this handle: let the URL go
    release();
    throw err;
  }
}

async function openEntry(h, url) {
  let resp = null;
  try { resp = await fetch(url, { method: "HEAD" }); } catch (e) { return h; }  // the GET will say
  if (!resp.ok) return h;
  const len = resp.headers.get("content-length");
  h.size = len === null ? -1 : Number(len);
  h.validator = resp.headers.get("etag") || resp.headers.get("last-modified") || "";
  if (h.size < 0 || !opfsOk()) return h;
  try {
    const dir = await cacheDir();
    h.name = await entryName(url);
    h.access = await (await dir.getFileHandle(`${h.name}.bin`, { create: true })).createSyncAccessHandle();
    const meta = await readMeta(dir, h.name);
    if (meta && meta.url === url && meta.validator === h.validator && meta.size === h.size) {
      const problem = verify(h.access, meta.pieces || []);
      if (problem === null) h.pieces = meta.pieces;
      else h.discarded = `The cached copy of ${fileLabel(url)} was dropped and fetched again: ${problem}`;
    }
    if (h.pieces.length === 0) {          // a new, stale or damaged entry starts empty
      await removeQuietly(dir, `${h.name}.json`);
      h.access.truncate(0);
      h.access.flush();
      const est = await navigator.storage.estimate();
      if (est.quota !== undefined && est.quota - (est.usage || 0) < h.size) {
        throw new DOMException(`${h.size} bytes do not fit`, "QuotaExceededError");
      }
    }
    h.mode = "cache";
  } catch (err) {
    await fallBack(h, err);
  }
  return h;
}

function store(h, start, data) {
  if (simulatedQuota !== null && simulatedStored + data.byteLength > simulatedQuota) {
    throw new DOMException("the test's storage quota is used up", "QuotaExceededError");
  }
  const n = h.access.write(data, { at: start });
  if (n !== data.byteLength) throw new DOMException(`wrote ${n} of ${data.byteLength} bytes`, "QuotaExceededError");
  simulatedStored += n;
  h.pieces.push([start, start + n, crc32(data, 0)]);
  h.pieces.sort((p, q) => p[0] - q[0]);
  h.storedBytes += n;
  h.dirty = true;
}

// Bytes [start, end) of the file: from the entry when it holds them, else fetched (and kept).
async function bytes(h, start, end) {
  if (h.mode === "cache" && covered(h.pieces, start, end)) {
    const data = new Uint8Array(end - start);
    if (h.access.read(data, { at: start }) === data.byteLength) {
      h.hitBytes += data.byteLength;
      return data;
    }
    h.discarded = `The cached copy of ${fileLabel(h.url)} was dropped and fetched again: it became shorter while being read`;
    h.pieces = [];
  }
  const data = await fetchRange(h.url, start, end);
  h.fetchedBytes += data.byteLength;
  if (h.mode === "cache") {
    try { store(h, start, data); } catch (err) { await fallBack(h, err); }
  }
  return data;
}

async function read(h, start, end) { return bytes(h, start, end); }

async function toBuffers(device, h, start, end, targets) {
  writePieces(device, await bytes(h, start, end), targets);
  return end - start;
}

// Close the handles; write each entry's record. -> what came from where, and one notice.
async function finish(handles) {
  const out = { hit_bytes: 0, fetched_bytes: 0, stored_bytes: 0, discarded: [], notice: null };
  let dir = null;
  for (const h of handles) {
    try {
      out.hit_bytes += h.hitBytes; out.fetched_bytes += h.fetchedBytes;
      if (h.discarded) out.discarded.push(h.discarded);
      if (h.mode === "cache" && h.access) {
        try {
          h.access.flush();
          h.access.close();
          h.access = null;
          if (h.dirty) {
            dir = dir || await cacheDir();
            await writeMeta(dir, h.name, { url: h.url, validator: h.validator, size: h.size,
                                           pieces: h.pieces, saved: new Date().toISOString() });
          }
          out.stored_bytes += h.storedBytes;
        } catch (err) {
          try { await fallBack(h, err); } catch (e2) { if (!h.notice) h.notice = storageSentence(h, e2); }
        }
      }
      if (h.notice && !out.notice) out.notice = h.notice;   // one sentence, however many files
    } finally {                 // every handle lets its URL go, whatever failed
      h.mode = "closed";
      h.release();
    }
  }
  return out;
}

// {bytes, files}: what the cache holds now (entries being written are counted too).
async function usage() {
  if (!opfsOk()) return { bytes: 0, files: 0, available: false };
  let total = 0, files = 0;
  const dir = await cacheDir();
  for await (const [name, handle] of dir.entries()) {
    if (handle.kind !== "file") continue;
    try { total += (await handle.getFile()).size; } catch (e) { /* open for writing now */ }
    if (name.endsWith(".json")) files += 1;
  }
  return { bytes: total, files, available: true };
}

async function clear() {
  if (opfsOk()) {
    const root = await navigator.storage.getDirectory();
    // an entry open now (a plan of the list's model runs beside the page's buttons) holds its
    // file's lock, and removing the folder would fail: let it finish first. Opens do not wait
    // for the clear (a plan holding config.json while it opens the weights would then wait for
    // a clear that waits for it): one that took a lock since makes the removal fail, and the
    // clear waits again. A lock this Worker does not hold (another tab's) fails it in the
    // browser's words.
    for (;;) {
      while (busyUrls.size) await Promise.all(busyUrls.values());
      try {
        await root.removeEntry(DIR, { recursive: true });
        break;
      } catch (e) {
        if (e && e.name === "NotFoundError") break;
        if (!(e && e.name === "NoModificationAllowedError" && busyUrls.size)) throw e;
      }
    }
  }
  simulatedStored = 0;
  return usage();
}

// Installs self.mwCache (for Python) and the page's ops on the Worker's global `scope`.
export function installWeightCache(scope, { crc32: crc }) {
  crc32 = crc;
  scope.mwCache = { open, read, toBuffers, finish: (handles, ok) => finish(handles, ok) };
  scope.mwOps = Object.assign(scope.mwOps || {}, {
    cacheUsage: () => usage(),
    cacheClear: () => clear(),
    // test hook: make writes fail as a full disk would after `quota` more bytes (null: off)
    cacheDebug: ({ quota }) => { simulatedQuota = quota ?? null; simulatedStored = 0; return true; },
  });
}
