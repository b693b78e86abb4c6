// The generate page: choose a model, stream a continuation, save/restore the conversation.
// All engine work happens in the Worker (py_engine/app/generate_session.py).
import { bootShell } from "/static/js/shell.js";

const $ = (id) => document.getElementById(id);
const S = "from py_engine.app import generate_session as s\n";
let engine = null;
let loaded = null;

function setBusy(busy) {
  $("generate-btn").disabled = busy || !loaded;
  $("stop-btn").disabled = !busy;
  $("load-btn").disabled = busy;
  $("save-state-btn").disabled = busy || !loaded;
  $("restore-state-btn").disabled = busy || !loaded;
}

async function listModels() {
  const models = await (await fetch("/api/models")).json();
  const sel = $("model-select");
  sel.innerHTML = "";
  for (const m of models) {
    const opt = document.createElement("option");
    opt.value = m.name;
    const size = m.param_count ? ` · ${(m.param_count / 1e6).toFixed(2)}M params` : "";
    opt.textContent = `${m.name} (${m.model_type || m.format}${size}${m.supported === false ? " · unsupported" : ""})`;
    opt.disabled = m.supported === false;
    opt.dataset.files = JSON.stringify(m.files || []);
    sel.append(opt);
  }
  const def = models.find((m) => m.name === "default");
  if (def) sel.value = "default";
  return models;
}

async function loadModel() {
  const sel = $("model-select");
  const name = sel.value;
  if (!name) return;
  $("model-error").textContent = "";
  $("load-progress").hidden = false;
  setBusy(true);
  try {
    const url = new URL(`/weights/${encodeURIComponent(name)}/`, location.href).href;
    const files = JSON.parse(sel.selectedOptions[0].dataset.files);
    loaded = await engine.run(S + "result = await s.load(args['url'], args['name'], args['files'])",
                              { url, name, files });
    $("model-info").textContent = `${loaded.name}: ${loaded.model_type}, ${loaded.layers} layers × d_model ` +
      `${loaded.d_model}, vocab ${loaded.vocab_size}, ${(loaded.params / 1e6).toFixed(2)}M params, ` +
      `tokenizer ${loaded.tokenizer || "none (token ids only)"}, loaded in ${loaded.load_s}s`;
    document.body.dataset.model = name;
  } catch (err) {
    loaded = null;
    $("model-error").textContent = `Could not load ${name}: ${err.message}`;
  } finally {
    $("load-progress").hidden = true;
    setBusy(false);
  }
}

// A model folder from this computer: the Files go to the Worker's registry and are read
// there (File.slice -> GPU); nothing is uploaded.
async function loadLocal(fileList) {
  const list = Array.from(fileList).map((file) => ({
    file, path: (file.webkitRelativePath || file.name).split("/").slice(1).join("/") || file.name,
  }));
  if (!list.length) return;
  const name = (list[0].file.webkitRelativePath || "").split("/")[0] || "local model";
  $("model-error").textContent = "";
  $("load-progress").hidden = false;
  setBusy(true);
  try {
    const ids = await engine.call({ op: "convertPutFiles", files: list });
    const files = Object.fromEntries(ids.map((f) => [f.path, f.id]));
    loaded = await engine.run(S + "result = await s.load_files(args['files'], args['name'])",
                              { files, name });
    $("model-info").textContent = `${loaded.name} (local): ${loaded.model_type}, ${loaded.layers} ` +
      `layers × d_model ${loaded.d_model}, vocab ${loaded.vocab_size}, ` +
      `${(loaded.params / 1e6).toFixed(2)}M params, tokenizer ${loaded.tokenizer || "none"}, ` +
      `loaded in ${loaded.load_s}s`;
    document.body.dataset.model = `local:${name}`;
  } catch (err) {
    loaded = null;
    $("model-error").textContent = `Could not load the chosen files: ${err.message}`;
  } finally {
    $("load-progress").hidden = true;
    setBusy(false);
  }
}

async function generate() {
  $("gen-error").textContent = "";
  const keep = $("keep-state").checked;
  if (!keep) $("output").textContent = "";
  const prefix = $("output").textContent;
  const sampling = {
    greedy: $("greedy").checked, temperature: +$("temperature").value, top_k: +$("top-k").value,
    top_p: +$("top-p").value, repetition_penalty: +$("rep-penalty").value, seed: +$("seed").value,
  };
  setBusy(true);
  document.body.dataset.generating = "1";
  try {
    const r = await engine.run(S + "result = await s.generate(prompt=args['prompt'], " +
      "max_new_tokens=args['n'], sampling=args['sampling'], keep_state=args['keep'])",
      { prompt: $("prompt").value, n: +$("max-new").value, sampling, keep });
    if (r.text !== null) $("output").textContent = prefix + r.text;
    $("gen-stats").textContent = `${r.ids.length} tokens · ${r.tokens_per_s.toFixed(1)} tok/s · ` +
      `first token ${(1000 * r.time_to_first_token_s).toFixed(0)} ms · ` +
      `${r.dispatches_per_token ?? "-"} dispatches/token${r.cancelled ? " · stopped" : ""}`;
  } catch (err) {
    $("gen-error").textContent = err.message;
  } finally {
    delete document.body.dataset.generating;
    document.body.dataset.generations = String(+(document.body.dataset.generations || 0) + 1);
    setBusy(false);
  }
}

// Conversation state persists in IndexedDB, per model.
function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("mambaweb", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("states");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
async function idbPut(key, value) {
  const db = await idb();
  return new Promise((res, rej) => {
    const tx = db.transaction("states", "readwrite");
    tx.objectStore("states").put(value, key);
    tx.oncomplete = res; tx.onerror = () => rej(tx.error);
  });
}
async function idbGet(key) {
  const db = await idb();
  return new Promise((res, rej) => {
    const req = db.transaction("states").objectStore("states").get(key);
    req.onsuccess = () => res(req.result); req.onerror = () => rej(req.error);
  });
}

async function saveState() {
  try {
    const r = await engine.run(S + "result = await s.save_state()");
    await idbPut(`state:${loaded.name}`, { state: r.state, text: $("output").textContent });
    $("gen-stats").textContent = "state saved in this browser";
  } catch (err) { $("gen-error").textContent = err.message; }
}

async function restoreState() {
  try {
    const saved = await idbGet(`state:${loaded.name}`);
    if (!saved) { $("gen-error").textContent = "No saved state for this model in this browser yet."; return; }
    await engine.run(S + "result = s.restore_state(args['state'])", { state: saved.state });
    $("output").textContent = saved.text;
    $("keep-state").checked = true;
    $("gen-stats").textContent = "state restored: the next generation continues from it";
  } catch (err) { $("gen-error").textContent = err.message; }
}

// ---- LoRA adapters: switched on the loaded model, the base is not reloaded ------------------
function b64(buf) {
  let s = "";
  const bytes = new Uint8Array(buf);
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function loadAdapter(fileList) {
  $("adapter-info").textContent = "";
  $("gen-error").textContent = "";
  const wanted = ["adapter_config.json", "adapter_model.safetensors"];
  const files = {};
  for (const f of fileList) if (wanted.includes(f.name)) files[f.name] = { __bytes__: b64(await f.arrayBuffer()) };
  const missing = wanted.filter((n) => !files[n]);
  if (missing.length) {
    $("gen-error").textContent = `That is not a LoRA adapter folder: ${missing.join(" and ")} missing ` +
      "(PEFT writes adapter_config.json + adapter_model.safetensors).";
    return;
  }
  try {
    const r = await engine.run(S + "result = await s.load_adapter(files=args['files'])", { files });
    const a = r.adapter;
    $("adapter-info").textContent = `adapter: rank ${a.r}, alpha ${a.alpha}, ${a.modules} layers, ` +
      `${a.params.toLocaleString()} parameters`;
    $("adapter-remove").hidden = false;
    document.body.dataset.adapter = "on";
  } catch (err) { $("gen-error").textContent = err.message; }
}

async function removeAdapter() {
  await engine.run(S + "result = await s.load_adapter()");
  $("adapter-info").textContent = "";
  $("adapter-remove").hidden = true;
  document.body.dataset.adapter = "off";
}

async function main() {
  engine = await bootShell();
  engine.on("load_progress", (m) => {
    $("load-progress").max = m.total_bytes; $("load-progress").value = m.bytes;
    $("model-info").textContent = `loading… ${(m.bytes / 1e6).toFixed(1)} / ${(m.total_bytes / 1e6).toFixed(1)} MB, ` +
      `${m.tensors}/${m.total_tensors} tensors, ${m.mb_per_s.toFixed(1)} MB/s`;
  });
  let prefix = "";
  engine.on("token", (m) => {
    if (m.n === 1) prefix = $("keep-state").checked ? $("output").textContent : "";
    if (m.text !== null) $("output").textContent = prefix + m.text;
    $("gen-stats").textContent = `${m.n} tokens · ${m.tokens_per_s.toFixed(1)} tok/s`;
  });
  if (engine.info.gpu_error) return;
  $("load-btn").onclick = loadModel;
  $("local-model").onchange = (ev) => loadLocal(ev.target.files);
  $("adapter-files").onchange = (ev) => loadAdapter(ev.target.files);
  $("adapter-remove").onclick = removeAdapter;
  $("generate-btn").onclick = generate;
  $("stop-btn").onclick = () => engine.cancel();
  $("save-state-btn").onclick = saveState;
  $("restore-state-btn").onclick = restoreState;
  await listModels();
  await loadModel();   // the embedded default model works with no setup
}

main().catch((err) => { const e = $("gen-error"); if (e) e.textContent = err.message; });
