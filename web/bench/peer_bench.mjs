// Peer-engine bench page: runs the npm package @seanhogg/builderforce-memory-engine exactly as
// published (its own initWebGPU / device setup, its own MambaModel / MambaTrainer) and times it.
// Driven from tools/peer_engine.py through `window.peer`. No mambaweb engine logic lives here:
// this file only instruments WebGPU (counting buffers, dispatches, submits, capturing errors)
// and calls the package's public API.
//
// The instrumentation is installed BEFORE the package is imported, so every GPU object the
// package creates is seen.

const qs = new URLSearchParams(location.search);
const PKG = qs.get('pkg') || '/peer/';

// ── instrumentation ─────────────────────────────────────────────────────────────────────────
const C = { created: 0, destroyed: 0, collected: 0, live: 0, liveBytes: 0, createdBytes: 0,
            submits: 0, dispatches: 0, shaderModules: 0, pipelines: 0 };
const S = { workload: 'load', errors: [], errIndex: new Map(), pipelines: [], devices: [] };
const MAX_DISTINCT_ERRORS = 400;

function record(kind, message, workload = S.workload) {
  message = String(message ?? '').slice(0, 4000);
  const key = `${workload}\u0000${kind}\u0000${message}`;
  const r = S.errIndex.get(key);
  if (r) { r.count++; return; }
  if (S.errors.length >= MAX_DISTINCT_ERRORS) return;
  const rec = { workload, kind, message, count: 1 };
  S.errIndex.set(key, rec);
  S.errors.push(rec);
}

const bufInfo = new WeakMap();
// Accounting windows: buffers born inside a window and not destroyed by its end are the ones
// the package left for the garbage collector (GC-independent, unlike a live count).
const windows = new Set();
function openWindow() {
  const w = { start: nextBufId, created: 0, createdBytes: 0, destroyed: 0, destroyedBytes: 0 };
  windows.add(w);
  return w;
}
function readWindow(w) {
  return { created: w.created, undestroyed: w.created - w.destroyed,
           undestroyed_bytes: w.createdBytes - w.destroyedBytes };
}
function closeWindow(w) { windows.delete(w); return readWindow(w); }
const destroyedIds = new Set();
let nextBufId = 1;
const finalizer = new FinalizationRegistry(({ id, size }) => {
  if (destroyedIds.delete(id)) return;
  C.collected++; C.live--; C.liveBytes -= size;
});

function instrument() {
  if (!('gpu' in navigator)) return false;
  const D = GPUDevice.prototype;
  const createBuffer = D.createBuffer;
  D.createBuffer = function (desc) {
    const b = createBuffer.call(this, desc);
    const id = nextBufId++;
    const size = Number(desc?.size ?? 0);
    bufInfo.set(b, { id, size, destroyed: false });
    finalizer.register(b, { id, size });
    C.created++; C.live++; C.liveBytes += size; C.createdBytes += size;
    for (const w of windows) { w.created++; w.createdBytes += size; }
    return b;
  };
  const destroy = GPUBuffer.prototype.destroy;
  GPUBuffer.prototype.destroy = function () {
    const i = bufInfo.get(this);
    if (i && !i.destroyed) {
      i.destroyed = true; destroyedIds.add(i.id);
      C.destroyed++; C.live--; C.liveBytes -= i.size;
      for (const w of windows) if (i.id >= w.start) { w.destroyed++; w.destroyedBytes += i.size; }
    }
    return destroy.call(this);
  };
  const createShaderModule = D.createShaderModule;
  D.createShaderModule = function (desc) {
    const m = createShaderModule.call(this, desc);
    C.shaderModules++;
    const wl = S.workload;
    const code = String(desc?.code ?? '');
    const entries = [...code.matchAll(/@compute[\s\S]*?fn\s+(\w+)/g)].map((x) => x[1]);
    const lines = code.split('\n');
    m.getCompilationInfo().then((ci) => {
      for (const msg of ci.messages) {
        if (msg.type !== 'error') continue;
        const src = (lines[msg.lineNum - 1] || '').trim();
        record('wgsl_compile',
          `[module with entry points ${entries.join(',')}] ${msg.lineNum}:${msg.linePos}: ` +
          `${msg.message}  | source: ${src}`, wl);
      }
    }).catch(() => {});
    return m;
  };
  // Error scopes around pipeline / layout / bind-group creation tie each validation error
  // to the kernel entry point it belongs to (the package labels nothing).
  const scoped = (device, kind, what, wl, fn) => {
    device.pushErrorScope('validation');
    const r = fn();
    device.popErrorScope().then((err) => {
      if (err) record(kind, `${what}: ${err.message}`, wl);
    }).catch(() => {});
    return r;
  };
  const pipeInfo = new WeakMap();    // pipeline -> { entry, device }
  const layoutEntry = new WeakMap(); // bind group layout -> entry point
  const createComputePipeline = D.createComputePipeline;
  D.createComputePipeline = function (desc) {
    const wl = S.workload;
    const entry = desc?.compute?.entryPoint ?? '?';
    C.pipelines++;
    this.pushErrorScope('validation');
    const p = createComputePipeline.call(this, desc);
    pipeInfo.set(p, { entry, device: this });
    this.popErrorScope().then((err) => {
      S.pipelines.push({ workload: wl, entry, ok: !err });
      if (err) record('pipeline', `createComputePipeline(${entry}): ${err.message}`, wl);
    }).catch(() => {});
    return p;
  };
  const getBindGroupLayout = GPUComputePipeline.prototype.getBindGroupLayout;
  GPUComputePipeline.prototype.getBindGroupLayout = function (i) {
    const info = pipeInfo.get(this);
    if (!info) return getBindGroupLayout.call(this, i);
    const l = scoped(info.device, 'bind_group_layout', `getBindGroupLayout(${info.entry})`,
                     S.workload, () => getBindGroupLayout.call(this, i));
    layoutEntry.set(l, info.entry);
    return l;
  };
  const createBindGroup = D.createBindGroup;
  D.createBindGroup = function (desc) {
    const entry = layoutEntry.get(desc?.layout) ?? '?';
    return scoped(this, 'bind_group', `createBindGroup(${entry})`, S.workload,
                  () => createBindGroup.call(this, desc));
  };
  const submit = GPUQueue.prototype.submit;
  GPUQueue.prototype.submit = function (cbs) { C.submits++; return submit.call(this, cbs); };
  const dispatch = GPUComputePassEncoder.prototype.dispatchWorkgroups;
  GPUComputePassEncoder.prototype.dispatchWorkgroups = function (...a) {
    C.dispatches++; return dispatch.apply(this, a);
  };
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (desc) {
    const dev = await requestDevice.call(this, desc);
    const info = this.info || {};
    S.devices.push({
      requiredLimits: { ...(desc?.requiredLimits || {}) },
      requiredFeatures: [...(desc?.requiredFeatures || [])],
      adapter: { vendor: info.vendor, architecture: info.architecture,
                 description: info.description, isFallbackAdapter: this.isFallbackAdapter },
      adapterLimits: { maxStorageBuffersPerShaderStage: this.limits.maxStorageBuffersPerShaderStage,
                       maxStorageBufferBindingSize: this.limits.maxStorageBufferBindingSize,
                       maxBufferSize: this.limits.maxBufferSize },
      adapterFeatures: [...this.features],
    });
    dev.addEventListener('uncapturederror', (ev) => {
      const e = ev.error;
      record('gpu_uncaptured', `${e?.constructor?.name || 'GPUError'}: ${e?.message}`);
    });
    const wl = () => S.workload;
    dev.lost.then((i) => {
      if (i.reason !== 'destroyed') record('device_lost', `${i.reason}: ${i.message}`, wl());
    });
    return dev;
  };
  return true;
}

const webgpu = instrument();

// ── helpers ─────────────────────────────────────────────────────────────────────────────────
const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const snap = () => ({ ...C });
const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - b[k]]));
const r3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);

class PeerTimeout extends Error {
  // inFlight: the package may still be running GPU work (the cap hit mid-call), so the
  // device is abandoned; otherwise we stopped cleanly between calls and keep the model.
  constructor(msg, inFlight = true) { super(msg); this.name = 'Timeout'; this.inFlight = inFlight; }
}

// Thrown from inside generate() to stop it cleanly (between tokens) before the time cap.
class StopDecode extends Error {}

function rng(seed) {            // mulberry32: reproducible token ids
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randomIds(n, vocab, seed) {
  const r = rng(seed);
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) ids[i] = Math.floor(r() * vocab);
  return ids;
}

function logitStats(logits, vocab, len) {
  let nonFinite = 0;
  for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i])) nonFinite++;
  const last = logits.subarray((len - 1) * vocab, len * vocab);
  let maxAbs = 0, sum = 0, sum2 = 0, argmax = 0;
  for (let i = 0; i < last.length; i++) {
    const v = last[i];
    if (!Number.isFinite(v)) continue;
    if (Math.abs(v) > maxAbs) maxAbs = Math.abs(v);
    if (v > last[argmax]) argmax = i;
    sum += v; sum2 += v * v;
  }
  const mean = sum / last.length;
  return { length: logits.length, expected_length: len * vocab, non_finite: nonFinite,
           last_row_max_abs: r3(maxAbs), last_row_std: r3(Math.sqrt(Math.max(0, sum2 / last.length - mean * mean))),
           last_row_all_zero: maxAbs === 0, last_row_argmax: argmax };
}

function buffersIn(obj, out = new Set(), depth = 0) {
  if (!obj || depth > 3) return out;
  if (obj instanceof GPUBuffer) { out.add(obj); return out; }
  if (typeof obj === 'object') for (const v of Object.values(obj)) buffersIn(v, out, depth + 1);
  return out;
}
function destroyAll(set) {
  let n = 0;
  for (const b of set) { const i = bufInfo.get(b); if (i && !i.destroyed) n++; b.destroy(); }
  return n;
}

function errorsFor(label) {
  const mine = S.errors.filter((e) => e.workload === label);
  return { total: mine.reduce((a, e) => a + e.count, 0),
           distinct: mine.length,
           first: mine.slice(0, 12).map(({ kind, message, count }) => ({ kind, message, count })) };
}

// ── state ───────────────────────────────────────────────────────────────────────────────────
let mod = null;
const models = {};   // name -> { device, model, cfg }

async function settle(device, ms = 3000) {
  if (device) {
    try { await Promise.race([device.queue.onSubmittedWorkDone(), sleep(ms)]); } catch (e) { /* lost */ }
  }
  await sleep(30);   // let getCompilationInfo / popErrorScope / uncapturederror callbacks land
}

function dropModel(name) {
  const m = models[name];
  if (!m) return;
  delete models[name];
  try { m.model.destroy(); } catch (e) { /* ignore */ }
  try { m.device.destroy(); } catch (e) { /* ignore */ }
}

async function buildModel(name, cfg) {
  const t0 = now();
  const { device, adapter } = await mod.initWebGPU();
  const t1 = now();
  // Mamba-1 (the README's quick start; mamba-130m is a Mamba-1 model), random weights.
  const model = new mod.MambaModel(device, {
    vocabSize: cfg.vocab_size, dModel: cfg.d_model, numLayers: cfg.n_layer,
    dState: cfg.d_state ?? 16, dConv: cfg.d_conv ?? 4, expand: cfg.expand ?? 2, seed: cfg.seed ?? 1234,
  });
  const t2 = now();
  models[name] = { device, adapter, model, cfg };
  await Promise.race([device.queue.onSubmittedWorkDone(), sleep(60000)]);
  const t3 = now();
  return { init_webgpu_ms: r3(t1 - t0), construct_ms: r3(t2 - t1), upload_wait_ms: r3(t3 - t2),
           total_ms: r3(t3 - t0) };
}

async function ensureModel(name, cfg, out) {
  if (models[name]) return models[name];
  out.reinit = await buildModel(name, cfg);   // a previous timeout destroyed the device
  return models[name];
}

// Runs fn(ctx) as one workload; never throws. Past the cap (timeoutMs) the workload counts as
// timed out, but it is awaited up to HARD_CAP_FACTOR x the cap so that its time is still
// measured and the package's GPU work is not left running under the next workload; past that
// the device is abandoned (destroyed) and the next workload builds the model again.
const HARD_CAP_FACTOR = 3;

async function workload(name, label, timeoutMs, fn, hardFactor = HARD_CAP_FACTOR) {
  const full = `${name}/${label}`;
  S.workload = full;
  const c0 = snap();
  const win = openWindow();
  const t0 = now();
  const ctx = { partial: {}, deadline: t0 + timeoutMs, expired: () => now() > ctx.deadline };
  let out;
  const timers = [];
  const after = (ms, msg) => new Promise((_, rej) => { timers.push(setTimeout(() => rej(new PeerTimeout(msg)), ms)); });
  const run = fn(ctx);
  run.catch(() => {});
  try {
    let res;
    try {
      res = await Promise.race([run, after(timeoutMs, `${full} exceeded the ${timeoutMs / 1000} s cap`)]);
      out = { completed: true, ...res };
    } catch (e) {
      if (!(e instanceof PeerTimeout)) throw e;
      res = await Promise.race([run, after(timeoutMs * (hardFactor - 1),
        `${full} exceeded the ${timeoutMs / 1000} s cap and was abandoned at ${timeoutMs * hardFactor / 1000} s`)]);
      out = { completed: true, over_cap: true, timed_out: true,
              error: `Timeout: ${full} exceeded the ${timeoutMs / 1000} s cap (finished after ${((now() - t0) / 1000).toFixed(1)} s)`,
              ...res };
    }
  } catch (e) {
    out = { completed: false, timed_out: e instanceof PeerTimeout,
            error: `${e?.name || 'Error'}: ${e?.message ?? e}`,
            stack: String(e?.stack || '').split('\n').slice(0, 6).join('\n'), ...ctx.partial };
    if (e instanceof PeerTimeout && e.inFlight) dropModel(name);   // abandon the device still busy with it
  } finally {
    timers.forEach(clearTimeout);
  }
  await settle(models[name]?.device);
  out.wall_ms = r3(now() - t0);
  const d = diff(snap(), c0);
  out.counters = { ...readWindow(win), destroyed_total: d.destroyed, submits: d.submits,
                   dispatches: d.dispatches, shader_modules: d.shaderModules, pipelines: d.pipelines };
  closeWindow(win);
  const pipes = S.pipelines.filter((p) => p.workload === full);
  out.pipelines = { created: pipes.length, failed: [...new Set(pipes.filter((p) => !p.ok).map((p) => p.entry))],
                    entry_points: [...new Set(pipes.map((p) => p.entry))] };
  out.gpu_errors = errorsFor(full);
  out.ok = out.completed && !out.over_cap && !out.partial_only && !out.check_failed && out.gpu_errors.total === 0;
  S.workload = 'idle';
  return out;
}

// ── workloads ───────────────────────────────────────────────────────────────────────────────
async function init(name, cfg, timeoutMs) {
  dropModel(name);
  return workload(name, 'init', timeoutMs, async () => {
    const t = await buildModel(name, cfg);
    const { device, model } = models[name];
    const nParams = model.parameters().reduce((a, p) => a + p.numel, 0);
    const L = device.limits;
    return { ...t, n_params: nParams,
             device_limits: { maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
                              maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
                              maxBufferSize: L.maxBufferSize,
                              maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup },
             device_features: [...device.features] };
  });
}

async function prefill(name, cfg, len, timeoutMs) {
  return workload(name, `prefill${len}`, timeoutMs, async () => {
    const out = {};
    const { model } = await ensureModel(name, cfg, out);
    const ids = randomIds(len, cfg.vocab_size, 1000 + len);
    const b0 = snap();
    const win = openWindow();
    const t0 = now();
    const r = await model.forward(ids, 1, len);
    const ms = now() - t0;
    const held = readWindow(win);
    const c1 = snap();
    const stats = logitStats(r.logits, cfg.vocab_size, len);
    // forward() hands back its GPU logits and per-layer caches; a user who wants the memory
    // back must destroy them. Count them, free them, and see what is left undestroyed.
    const returned = destroyAll(buffersIn({ g: r.gpuLogits, c: r.caches }));
    const left = closeWindow(win);
    return { ...out, tokens: len, ms: r3(ms), tokens_per_s: r3(len / ms * 1000),
             logits_readback_bytes: r.logits.byteLength, logits: stats,
             buffers: { created: held.created,
                        undestroyed_with_result_held: held.undestroyed,
                        undestroyed_bytes_with_result_held: held.undestroyed_bytes,
                        returned_to_caller: returned,
                        left_undestroyed_after_freeing_result: left.undestroyed,
                        left_undestroyed_bytes: left.undestroyed_bytes },
             dispatches: c1.dispatches - b0.dispatches, submits: c1.submits - b0.submits };
  });
}

// Sequence mixing, both ways: changing only the LAST token must leave every earlier position's
// logits unchanged (causal), and changing only the FIRST token must change later positions'
// logits (the mixer actually carries information along the sequence).
async function mixingCheck(model, V, len) {
  const ids = randomIds(len, V, 77);
  const idsLast = ids.slice();
  idsLast[len - 1] = (ids[len - 1] + 1) % V;
  const idsFirst = ids.slice();
  idsFirst[0] = (ids[0] + 1) % V;
  const a = await model.forward(ids, 1, len);
  const b = await model.forward(idsLast, 1, len);
  const c = await model.forward(idsFirst, 1, len);
  let leak = 0, firstBad = -1, maxAbs = 0, carry = 0, nonFinite = 0;
  for (let t = 0; t < len; t++) {
    for (let v = 0; v < V; v++) {
      const i = t * V + v;
      if (!Number.isFinite(a.logits[i])) { nonFinite++; continue; }
      maxAbs = Math.max(maxAbs, Math.abs(a.logits[i]));
      if (t < len - 1) {
        const d = Math.abs(a.logits[i] - b.logits[i]);
        if (d > leak) leak = d;
        if (d > 1e-5 && firstBad < 0) firstBad = t;
      }
      if (t > 0) carry = Math.max(carry, Math.abs(a.logits[i] - c.logits[i]));
    }
  }
  destroyAll(buffersIn({ a: [a.gpuLogits, a.caches], b: [b.gpuLogits, b.caches], c: [c.gpuLogits, c.caches] }));
  const causal = leak <= 1e-5;
  const mixes = carry > 1e-6;
  const notes = [];
  if (nonFinite) notes.push(`${nonFinite} non-finite logits`);
  if (maxAbs === 0) notes.push('logits are all zero: the model computed nothing');
  if (!causal) notes.push(`changing token ${len - 1} changed the logits of position ${firstBad}: not causal`);
  if (!mixes) notes.push('changing token 0 changed no later position: no information flows along the sequence (the mixer computes nothing)');
  return { tokens: len, max_abs_logit: r3(maxAbs), non_finite: nonFinite,
           causal, max_diff_earlier_positions_when_last_token_changes: leak, first_affected_position: firstBad,
           mixes_sequence: mixes, max_diff_later_positions_when_first_token_changes: carry,
           check_failed: !(causal && mixes) || nonFinite > 0, notes };
}

async function causality(name, cfg, len, timeoutMs) {
  return workload(name, 'causality', timeoutMs, async () => {
    const out = {};
    const { model } = await ensureModel(name, cfg, out);
    return { ...out, ...(await mixingCheck(model, cfg.vocab_size, len)) };
  });
}

// Every mixer the package advertises (HybridMambaModel layer types), one tiny layer each, with
// its own initWebGPU device: does it compile, validate, mix along the sequence, stay causal?
async function mixer(type, timeoutMs) {
  const name = `mixer_${type}`;
  return workload('mixers', type, timeoutMs, async () => {
    const { device } = await mod.initWebGPU();
    const cfg = { vocabSize: 256, dModel: 64, numLayers: 1, nHeads: 4, layers: [{ type }], seed: 7 };
    let model;
    try {
      S.workload = `mixers/${type}`;
      model = new mod.HybridMambaModel(device, cfg);
      models[name] = { device, model, cfg };
      await settle(device);
      const check = await mixingCheck(model, 256, 16);
      await settle(device);
      return { layer: type, config: cfg, ...check };
    } finally {
      dropModel(name);
      try { device.destroy(); } catch (e) { /* ignore */ }
    }
  });
}

async function decode(name, cfg, promptLen, newTokens, timeoutMs) {
  return workload(name, `decode_p${promptLen}`, timeoutMs, async (ctx) => {
    const out = {};
    const { model } = await ensureModel(name, cfg, out);
    const prompt = Array.from(randomIds(promptLen, cfg.vocab_size, 5000 + promptLen));
    const calls = [];
    const starts = [];
    ctx.partial = { prompt_len: promptLen, requested_new_tokens: newTokens, partial: true, forward_calls: calls };
    // Observe each forward() that generate() makes (its sequence length tells whether decode
    // re-runs the whole sequence), and stop before a token that would overrun the cap.
    const forward = model.forward;
    model.forward = async function (tokenIds, batch, seqLen) {
      const t = now();
      const last = calls.length ? t - starts[starts.length - 1] : 0;
      if (calls.length && t + last * 1.1 > ctx.deadline - 200) {
        throw new StopDecode(`stopped after ${calls.length} of ${newTokens} tokens: the next would take ~${Math.round(last)} ms and overrun the ${timeoutMs / 1000} s cap`);
      }
      const c0 = snap();
      starts.push(t);
      const r = await forward.call(this, tokenIds, batch, seqLen);
      calls.push({ seq_len: seqLen, forward_ms: r3(now() - t), buffers_created: C.created - c0.created,
                   dispatches: C.dispatches - c0.dispatches });
      return r;
    };
    const b0 = snap();
    const win = openWindow();
    const t0 = now();
    let n, stopped = null;
    try {
      const ids = await model.generate(prompt, newTokens);
      n = ids.length - promptLen;
    } catch (e) {
      if (!(e instanceof StopDecode)) throw e;
      stopped = e.message;
      n = calls.length;   // each completed forward was sampled and appended
    } finally {
      delete model.forward;
    }
    const total = now() - t0;
    starts.push(t0 + total);
    const perToken = calls.map((c, i) => ({ pos: c.seq_len, ms: r3(starts[i + 1] - starts[i]) }));
    const w = closeWindow(win);
    const c1 = snap();
    return { ...out, prompt_len: promptLen, requested_new_tokens: newTokens, new_tokens: n,
             partial: !!stopped, stopped, total_ms: r3(total),
             tokens_per_s: r3(n / total * 1000), per_token: perToken,
             forward_seq_lens: calls.map((c) => c.seq_len),
             reruns_full_sequence: calls.length > 0 && calls.every((c, i) => c.seq_len === promptLen + i),
             dispatches_per_token: r3((c1.dispatches - b0.dispatches) / Math.max(1, n)),
             buffers_created_per_token: r3(w.created / Math.max(1, n)),
             buffers_left_undestroyed_per_token: r3(w.undestroyed / Math.max(1, n)),
             bytes_left_undestroyed: w.undestroyed_bytes };
  });
}

async function train(name, cfg, tcfg, timeoutMs) {
  return workload(name, 'train', timeoutMs, async (ctx) => {
    const out = {};
    const { model } = await ensureModel(name, cfg, out);
    const { batch, seq_len: seqLen, steps, lr = 1e-3, period = 32 } = tcfg;
    // Data: `period` random tokens repeated (learnable: after one period every next token is
    // determined). Each train() call gets seqLen+1 tokens with batchSize=batch, which the
    // trainer runs as exactly one optimizer step; the same chunk every step, so a working
    // trainer drives its loss down fast.
    const pat = randomIds(period, cfg.vocab_size, 99);
    const data = Array.from({ length: seqLen + 1 }, (_, i) => pat[i % period]);
    const t0c = now();
    const trainer = new mod.MambaTrainer(model);
    const constructMs = now() - t0c;
    const stepsOut = [];
    const fwd = [];
    ctx.partial = { partial: true, steps: stepsOut, batch, seq_len: seqLen };
    const forward = model.forward;
    model.forward = async function (tokenIds, b, L) {
      fwd.push({ ids: tokenIds.length, batch: b, seq_len: L });
      return forward.call(this, tokenIds, b, L);
    };
    const b0 = snap();
    const win = openWindow();
    const tStart = now();
    try {
      for (let s = 0; s < steps; s++) {
        const per = s ? (now() - tStart) / s : 0;
        if (s > 0 && now() + per * 1.1 > ctx.deadline - 200) {   // next step would overrun the cap
          out.stopped = `stopped after ${s} of ${steps} steps: the next would overrun the ${timeoutMs / 1000} s cap`;
          break;
        }
        const f0 = fwd.length;
        const t0 = now();
        const losses = await trainer.train(data, { batchSize: batch, seqLen, epochs: 1, learningRate: lr, maxGradNorm: 1.0 });
        stepsOut.push({ step: s, ms: r3(now() - t0), loss: losses[0], optimizer_steps: fwd.length - f0 });
      }
    } finally {
      delete model.forward;
    }
    const elapsed = now() - tStart;
    const w = closeWindow(win);
    const c1 = snap();
    const done = stepsOut.length;
    const opt = stepsOut.reduce((a, s) => a + s.optimizer_steps, 0);
    const tokens = done * seqLen;                 // data tokens the trainer actually consumed
    const msSorted = stepsOut.map((s) => s.ms).sort((a, b) => a - b);
    const losses = stepsOut.map((s) => s.loss);
    const f = fwd[0] || {};
    const backward = [...new Set(S.pipelines.filter(
      (p) => p.workload.startsWith(`${name}/`) && /backward|_dx|_dw|_dX|_dW/.test(p.entry)).map((p) => p.entry))];
    const decreased = done > 1 && losses[losses.length - 1] < losses[0] - 0.05;
    const notes = [];
    if (done > 1 && !decreased) notes.push(`loss did not decrease over ${done} steps on a repeated chunk (${r3(losses[0])} -> ${r3(losses[losses.length - 1])}; uniform is ${r3(Math.log(cfg.vocab_size))})`);
    if (f.ids !== undefined && f.ids !== f.batch * f.seq_len) notes.push(`batch not honoured: forward(ids of length ${f.ids}, batch ${f.batch}, seqLen ${f.seq_len})`);
    if (done && !backward.length) notes.push('no backward kernel was built: the trainer has no backward pass');
    return { ...out, notes, check_failed: notes.length > 0, batch, seq_len: seqLen, requested_steps: steps, steps_done: done, optimizer_steps: opt,
             partial: done < steps, partial_only: done === 0,
             trainer_construct_ms: r3(constructMs),
             tokens_trained: tokens, tokens_per_s: r3(tokens / elapsed * 1000),
             nominal_tokens: done * batch * seqLen, nominal_tokens_per_s: r3(done * batch * seqLen / elapsed * 1000),
             ms_per_step: r3(msSorted[Math.floor(msSorted.length / 2)]), steps: stepsOut,
             loss_first: losses[0], loss_last: losses[losses.length - 1], losses,
             loss_uniform: r3(Math.log(cfg.vocab_size)),
             loss_decreased: decreased,
             losses_finite: losses.every(Number.isFinite),
             forward_arg_check: { token_ids_passed: f.ids, batch_arg: f.batch, seq_len_arg: f.seq_len,
                                  batch_honoured: f.ids === f.batch * f.seq_len },
             backward_entry_points_created: backward,
             buffers_left_undestroyed_per_step: r3(w.undestroyed / Math.max(1, done)),
             bytes_left_undestroyed: w.undestroyed_bytes,
             dispatches_per_step: r3((c1.dispatches - b0.dispatches) / Math.max(1, done)) };
  }, 1.5);   // its cap is already stretched to fit two steps (tools/peer_engine.py)
}

// ── load the package ────────────────────────────────────────────────────────────────────────
async function load() {
  const t0 = now();
  const meta = await (await fetch(`${PKG}package.json`)).json();
  mod = await import(`${PKG}${(meta.exports?.['.']?.import || meta.module || meta.main).replace(/^\.\//, '')}`);
  return { name: meta.name, version: meta.version, import_ms: r3(now() - t0),
           module_version_constant: mod.VERSION ?? null,
           exports: Object.keys(mod).sort() };
}

// start(id, method, args): run a workload without holding the caller's evaluate() open, so the
// host can enforce its own timeout (wait_for_function) even if the page stops responding.
const results = {};
window.__peerResults = results;
function start(id, method, args) {
  Promise.resolve()
    .then(() => window.peer[method](...args))
    .then((r) => { results[id] = { ok: true, value: r }; },
          (e) => { results[id] = { ok: false, error: `${e?.name || 'Error'}: ${e?.message ?? e}` }; });
}

window.peer = {
  webgpu, start, take: (id) => { const r = results[id]; delete results[id]; return r; }, init, mixer, prefill, causality, decode, train, dropModel,
  errors: () => S.errors.map(({ workload, kind, message, count }) => ({ workload, kind, message, count })),
  devices: () => S.devices,
  counters: () => snap(),
  setWorkload: (w) => { S.workload = w; },
};

const status = document.getElementById('status');
try {
  if (!webgpu) throw new Error('navigator.gpu is not available in this page');
  window.peerInfo = await load();
  S.workload = 'idle';
  status.textContent = `loaded ${window.peerInfo.name}@${window.peerInfo.version}`;
  document.body.dataset.peer = 'ready';
} catch (e) {
  window.peerInfo = { error: `${e?.name || 'Error'}: ${e?.message ?? e}` };
  status.textContent = window.peerInfo.error;
  document.body.dataset.peer = 'error';
}
